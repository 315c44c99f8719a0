"""`python -m training import-slim CHECKPOINT`: TF-slim's ImageNet Inception V2, served as it is.

Builds our `inception_v2` at slim's 224 x 224 with the checkpoint's classes (1001: slim's
`background` then ImageNet's 1000), sets every weight from the checkpoint (training/slim_checkpoint.py)
and exports the next version with slim's evaluation preprocessing in its signatures
(training/preprocessing.py's `SLIM_EVAL`) and ImageNet's class names as its labels.
"""

import json
import logging
from pathlib import Path
from typing import Any

from training.export import export_model
from training.inception_v2 import inception_v2
from training.preprocessing import SLIM_EVAL
from training.slim_checkpoint import (
    CheckpointMismatch,
    assign_all,
    checkpoint_files,
    num_classes,
    read_checkpoint,
    sha256,
)

logger = logging.getLogger(__name__)

IMAGE_SIZE = 224  # slim's inception_v2.default_image_size, at which the checkpoint was evaluated
BACKGROUND = "background"
IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.json")
ARCHITECTURE = "inception_v2"


def imagenet_labels() -> list[str]:
    """slim's 1001 outputs by name: `background`, then ImageNet's classes in WordNet id order."""
    return [BACKGROUND, *json.loads(IMAGENET_CLASSES.read_text())["names"]]


def provenance(prefix: Path, tensors: int) -> dict[str, Any]:
    """metadata.json's `training` for an imported version: where the weights came from, and what
    was not done here."""
    return {
        "imported_from": {
            "format": "TF-slim inception_v2 checkpoint",
            "checkpoint": prefix.name,
            # By name (an object, not a list: the page shows nested objects as sections).
            "files": {
                path.name: {"bytes": path.stat().st_size, "sha256": sha256(path)}
                for path in checkpoint_files(prefix)
            },
            "tensors": tensors,
        },
        "trained_here": False,
        "note": (
            "Weights imported as they are: not trained, fine-tuned or evaluated here. TF-slim's model zoo "
            "reports 73.9 % top-1 on ImageNet's validation images for inception_v2_2016_08_28, with the "
            "preprocessing this version applies."
        ),
        "labels": "background, then ImageNet's 1000 classes (names from imagenet-classes 0.2.1, MIT)",
    }


def import_slim(checkpoint: str | Path, model_base_path: str | Path, model_name: str) -> Path:
    """Export the next version of `model_name` from a slim checkpoint; return its folder.

    Raises `ValueError` (a `CheckpointMismatch` when the tensors do not fit) saying what is wrong.
    """
    prefix = Path(checkpoint)
    layers = read_checkpoint(prefix)
    classes = num_classes(layers)
    labels = imagenet_labels()
    if classes != len(labels):
        raise CheckpointMismatch(
            f"{prefix}: its classifier gives {classes} classes; import-slim serves ImageNet's "
            f"{len(labels)} (slim's background class and 1000)"
        )
    model = inception_v2((IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=classes)
    tensors = assign_all(model, layers)
    logger.info("Assigned all %d tensors of %s to %s layers", tensors, prefix, len(layers))
    version_dir = export_model(
        model,
        labels,
        base_path=model_base_path,
        name=model_name,
        architecture=ARCHITECTURE,
        training=provenance(prefix, tensors),
        preprocessing=SLIM_EVAL,
    )
    logger.info("Exported %s", version_dir)
    return version_dir
