#!/bin/sh
# Generate the synthetic demo data set and train the next version of the demo model into
# $MODEL_BASE_PATH/$MODEL_NAME. Extra arguments go to `python -m training train` (e.g. --epochs 3).
# The trainer image runs this as its command; the `demo` image runs it at build time.
# Data and checkpoints live in a scratch folder, so any user id can run it (compose runs it as yours).
set -eu
# Within a second, not at export minutes later: fail if the model repository cannot take a version.
python -m training.repository "$MODEL_BASE_PATH/$MODEL_NAME"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
python -m training make-demo-data --out data
python -m training train --data-dir data \
    --model-base-path "$MODEL_BASE_PATH" --model-name "$MODEL_NAME" "$@"
