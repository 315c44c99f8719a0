"""Start a network from the weights of another (`--init-from`): a version in a model repository,
or a TF-slim `inception_v2` checkpoint (ImageNet's, read by training/slim_checkpoint.py).

Every layer of the new network whose name and weight shapes match a layer of the source takes the
source's weights; the others start fresh, and the run logs which is which. So the classifier
starts fresh when the label set has another size, and the whole network is restored when it is the
same (a classifier for another label set of the same size is restored too: training moves it).
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from training.export import METADATA_FILE, WEIGHTS_FILE, load_layer_weights
from training.slim_checkpoint import read_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Initialization:
    """Where each layer with weights of the new network got them."""

    source: str
    restored: list[str] = field(default_factory=list)
    fresh: dict[str, str] = field(default_factory=dict)  # layer name -> why it starts fresh

    def summary(self) -> dict:
        return {"from": self.source, "restored_layers": len(self.restored), "fresh_layers": self.fresh}


def load_version(folder: Path) -> dict[str, list[np.ndarray]]:
    """The weights per layer name of an exported version."""
    if not (folder / WEIGHTS_FILE).is_file():
        raise ValueError(
            f"--init-from {folder} has no {WEIGHTS_FILE}: it was exported before versions carried their "
            "weights by layer name. Export it again (train it once more) to start from it."
        )
    return load_layer_weights(folder / WEIGHTS_FILE)


def load_source(path: str | Path) -> dict[str, list[np.ndarray]]:
    """The weights per layer name that `--init-from` names, or a ValueError saying what is wrong."""
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        return load_version(path)
    if path.is_dir():
        raise ValueError(
            f"--init-from {path} is not a model version folder (models/<name>/<version>, holding "
            f"{METADATA_FILE} and {WEIGHTS_FILE}) nor a TF-slim checkpoint (a prefix: inception_v2.ckpt)."
        )
    return {name: list(layer.arrays) for name, layer in read_checkpoint(path).items()}


def source_name(path: str | Path) -> str:
    """How a version's metadata names where it started: `<model>/<version>` for a version folder, the
    checkpoint's file name for a slim checkpoint; never a path of the trainer's machine."""
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name}" if (path / METADATA_FILE).is_file() else path.name


def initialize_from(model: keras.Model, path: str | Path) -> Initialization:
    """Copy into `model` every layer of the source at `path` whose name and weight shapes match."""
    source = load_source(path)
    result = Initialization(source=source_name(path))
    for layer in model.layers:
        if not layer.weights:
            continue
        arrays = source.get(layer.name)
        if arrays is None:
            result.fresh[layer.name] = "not in the source"
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        source_shapes = [tuple(a.shape) for a in arrays]
        if shapes != source_shapes:
            result.fresh[layer.name] = f"shape {source_shapes} in the source, {shapes} here"
            continue
        layer.set_weights(arrays)
        result.restored.append(layer.name)
    log.info(
        "Initialized %d of %d layers from %s",
        len(result.restored),
        len(result.restored) + len(result.fresh),
        path,
    )
    for name, reason in result.fresh.items():
        log.info("  %s starts fresh: %s", name, reason)
    if not result.restored:
        raise ValueError(
            f"--init-from {path}: no layer of the source fits this network; nothing to start from."
        )
    return result
