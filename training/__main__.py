"""Command line: `python -m training make-demo-data|train|evaluate|import-slim ...`.

TensorFlow is imported only by the command that runs, so `--help` answers at once.
"""

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from training.config import ARCHITECTURE_NAMES, LR_SCHEDULES, TrainConfig

IMPORTED_MODEL_NAME = "inception_v2_imagenet"
DEFAULTS_NOTE = (
    "Defaults train the demo shapes to about 97% validation accuracy in 12 epochs from scratch; "
    "docs/training.md gives the measurements behind them."
)


def add_repository_arguments(
    parser: argparse.ArgumentParser, model_name: str, help: str | None = None
) -> None:
    """`--model-base-path` and `--model-name`: the model repository, and the model the command exports
    the next version of (or evaluates)."""
    parser.add_argument("--model-base-path", default=TrainConfig.model_base_path, help="the model repository")
    parser.add_argument("--model-name", default=model_name, help=help)


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig(data_dir="")
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("make-demo-data", help="write a synthetic dataset as class folders")
    demo.add_argument("--out", required=True, help="folder to write <class>/<image>.jpg into")
    demo.add_argument(
        "--kind",
        choices=("shapes", "strokes"),
        default="shapes",
        help="five solid shapes (the demo), or ten digits drawn as strokes over varied backgrounds (harder)",
    )
    demo.add_argument("--images-per-class", type=int, default=500)
    demo.add_argument("--size", type=int, default=80, help="image side in pixels")
    demo.add_argument("--seed", type=int, default=0, help="the same seed writes the same images")

    train = commands.add_parser(
        "train",
        help="train on a folder of class subfolders and export the next model version",
        description=DEFAULTS_NOTE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument(
        "--data-dir", required=True, help="folder of <label>/<image> (JPEG, PNG, GIF, BMP, WebP)"
    )
    train.add_argument("--arch", choices=sorted(ARCHITECTURE_NAMES), default=defaults.arch)
    train.add_argument(
        "--image-size", type=int, default=defaults.image_size, help="square input side in pixels"
    )
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="Adam's peak rate")
    train.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=defaults.lr_schedule,
        help="after the warm-up: cosine decay to 0 by the last epoch (from --decay-start on), or constant",
    )
    train.add_argument(
        "--decay-start",
        type=float,
        default=argparse.SUPPRESS,  # TrainConfig's None: 0.5 from scratch, 0 with --init-from
        help="how far through the epochs after the warm-up the cosine decay begins; until then the "
        "rate holds at its peak (0: decay from the end of the warm-up; default: 0.5 from scratch, "
        "0 with --init-from)",
    )
    train.add_argument(
        "--warmup-epochs",
        type=int,
        default=defaults.warmup_epochs,
        help="epochs over which the learning rate rises linearly from 0 (0: none)",
    )
    train.add_argument(
        "--label-smoothing",
        type=float,
        default=defaults.label_smoothing,
        help="train towards (1 - s) for the true class and s spread over all classes",
    )
    train.add_argument(
        "--weight-decay",
        type=float,
        default=defaults.weight_decay,
        help="decoupled weight decay (AdamW) of kernels; biases and batch-norm offsets are not decayed",
    )
    train.add_argument("--validation-split", type=float, default=defaults.validation_split)
    train.add_argument(
        "--patience", type=int, default=defaults.patience, help="early-stopping patience in epochs"
    )
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=defaults.augment,
        help="random crops (zooming in by up to 20%%) and brightness and contrast changes of the training "
        "images; --no-augment trains on them as they are",
    )
    train.add_argument(
        "--augment-flip",
        action=argparse.BooleanOptionalAction,
        default=defaults.augment_flip,
        help="with --augment, also mirror images left to right: for photos of things, never for "
        "digits, letters or anything a mirror changes the class of",
    )
    train.add_argument(
        "--central-crop",
        type=float,
        default=defaults.central_crop,
        help="keep this fraction of each side around the centre before resizing, in training and in the "
        "exported version (TF-slim evaluates at 0.875)",
    )
    fine_tune = train.add_argument_group("fine-tuning (with --init-from)")
    fine_tune.add_argument(
        "--init-from",
        default=None,
        help="start from the weights of a version folder (models/<name>/<version>) or a TF-slim "
        "inception_v2 checkpoint (its prefix, as inception_v2.ckpt): every layer whose shape fits is "
        "restored; the classifier starts fresh when the label set differs",
    )
    fine_tune.add_argument(
        "--freeze-base-epochs",
        type=int,
        default=defaults.freeze_base_epochs,
        help="first train only the classifier (and layers that start fresh) for this many epochs",
    )
    fine_tune.add_argument(
        "--fine-tune-from",
        default=None,
        help="then train from this block on, e.g. Mixed_4a (default: the whole network)",
    )
    fine_tune.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        default=defaults.fine_tune_learning_rate,
        help="Adam's peak rate once the base trains",
    )
    fine_tune.add_argument(
        "--train-batch-norm",
        action="store_true",
        help="let batch norm learn while fine-tuning (default: frozen, in inference mode)",
    )
    add_repository_arguments(train, defaults.model_name)
    train.add_argument(
        "--checkpoint-dir",
        default=None,
        help="where an interrupted run resumes from (default: checkpoints/<name>)",
    )
    train.add_argument("--tensorboard-dir", default=None, help="write TensorBoard logs into this folder")

    evaluate = commands.add_parser(
        "evaluate",
        help="measure a model version on a folder of class subfolders; writes evaluation.json beside it",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evaluate.add_argument(
        "--data-dir", required=True, help="folder of <label>/<image>, labels the model knows"
    )
    add_repository_arguments(evaluate, defaults.model_name)
    evaluate.add_argument(
        "--version", type=int, default=None, help="the version to evaluate (default: newest)"
    )

    import_slim = commands.add_parser(
        "import-slim",
        help="export TF-slim's ImageNet Inception V2 checkpoint as the next model version, 1001 classes",
        description=(
            "Serve TF-slim's ImageNet weights as they are: every one of the checkpoint's 277 tensors is "
            "assigned (or the command names what does not fit and exits with status 2), and the version "
            "preprocesses as slim evaluated it (central crop of 87.5 %, bilinear resize to 224 x 224)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    import_slim.add_argument(
        "checkpoint",
        help="the checkpoint's prefix, e.g. inception_v2.ckpt from inception_v2_2016_08_28.tar.gz",
    )
    # Not the trained model's name: ImageNet's 1001 classes should not become its next version unasked.
    add_repository_arguments(import_slim, IMPORTED_MODEL_NAME, help="the model it is a version of")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The C++ log threshold, set before TensorFlow loads. Where no NVIDIA driver is present, also
    # the "failed call to cuInit" the GPU-enabled wheel logs as an error at every start: not an
    # error on a CPU machine. GPUs stay visible. app/__main__.py does the same for the service.
    nvidia = any(os.path.exists(device) for device in ("/dev/nvidiactl", "/dev/dxg"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if nvidia else "3")
    # Our progress at INFO; TensorFlow's and absl's chatter only when it is a warning.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
    try:
        if args.command == "make-demo-data":
            from training.demo_data import make_demo_data
            from training.stroke_data import make_stroke_data

            make = make_demo_data if args.kind == "shapes" else make_stroke_data
            out = make(args.out, args.images_per_class, args.size, args.seed)
            print(f"Wrote {args.images_per_class} images per class into {out}")
        elif args.command == "evaluate":
            from training.evaluate import run

            run(args.data_dir, args.model_base_path, args.model_name, args.version)
        elif args.command == "import-slim":
            from training.repository import check_writable

            check_writable(Path(args.model_base_path) / args.model_name)
            from training.import_slim import import_slim

            print(f"Exported {import_slim(args.checkpoint, args.model_base_path, args.model_name)}")
        else:
            from training.cluster import worker_from_environment
            from training.repository import check_writable

            # Before TensorFlow loads (seconds): a folder owned by someone else, or a malformed
            # TF_CONFIG, fails at once, not at export.
            check_writable(Path(args.model_base_path) / args.model_name)
            worker_from_environment()
            from training.distributed import LostPeer
            from training.train import train

            try:
                train(TrainConfig(**{k: v for k, v in vars(args).items() if k != "command"}))
            except LostPeer as error:  # one of several workers: the message names the lost one
                print(f"error: {error}", file=sys.stderr)
                return 1
    except ValueError as error:  # DataError and argument checks: the message is the whole story
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "Interrupted; run the same command again to resume from the last finished epoch.", file=sys.stderr
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
