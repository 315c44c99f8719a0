#!/bin/sh
# pip-install.sh REQUIREMENTS: install a requirement list (requirements.py writes them) into the active
# virtual environment with the project's locks, then leave out what the image never runs: bytecode
# caches, the packages' test suites and TensorFlow's C++ headers (287 MB, for compiling custom ops).
# Run from the folder holding constraints.txt and constraints-cuda.txt.
set -eu
pip install --no-compile -c constraints.txt -c constraints-cuda.txt -r "$1"
find "$VIRTUAL_ENV" -depth -type d \( -name __pycache__ -o -name tests \) -exec rm -rf {} +
rm -rf "$VIRTUAL_ENV"/lib/python3*/site-packages/tensorflow/include
