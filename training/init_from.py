"""Start a network from the weights of another: a version in a model repository (`--init-from`).

Every layer of the new network whose name and weight shapes match a layer of the source takes the
source's weights; the others start fresh, and the run logs which is which. So the classifier
starts fresh when the label set has another size, and the whole network is restored when it is the
same (a classifier for another label set of the same size is restored too: training moves it).
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import keras

from training.export import METADATA_FILE, WEIGHTS_FILE
from training.inception_v2 import ARCHITECTURES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Initialization:
    """Where each layer with weights of the new network got them."""

    source: str
    restored: list[str] = field(default_factory=list)
    fresh: dict[str, str] = field(default_factory=dict)  # layer name -> why it starts fresh

    def summary(self) -> dict:
        return {"from": self.source, "restored_layers": len(self.restored), "fresh_layers": self.fresh}


def load_version(folder: Path) -> keras.Model:
    """The Keras network of an exported version, rebuilt from its metadata and given its weights."""
    metadata = json.loads((folder / METADATA_FILE).read_text())
    architecture = metadata.get("architecture", {})
    builder = ARCHITECTURES.get(architecture.get("name"))
    if builder is None:
        raise ValueError(
            f"--init-from {folder}: its architecture {architecture.get('name')!r} is not one of "
            f"{sorted(ARCHITECTURES)}."
        )
    if not (folder / WEIGHTS_FILE).is_file():
        raise ValueError(
            f"--init-from {folder} has no {WEIGHTS_FILE}: it was exported before versions carried their "
            "Keras weights. Export it again (train it once more) to start from it."
        )
    model = builder(tuple(architecture["input_shape"]), len(metadata["labels"]))
    model.load_weights(folder / WEIGHTS_FILE)
    return model


def load_source(path: str | Path) -> keras.Model:
    """The network `--init-from` names, with its weights, or a ValueError saying what is wrong."""
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        return load_version(path)
    raise ValueError(
        f"--init-from {path} is not a model version folder (models/<name>/<version>, holding "
        f"{METADATA_FILE} and {WEIGHTS_FILE})."
    )


def initialize_from(model: keras.Model, path: str | Path) -> Initialization:
    """Copy into `model` every layer of the source at `path` whose name and weight shapes match."""
    source = load_source(path)
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    result = Initialization(source=str(path))
    for layer in model.layers:
        if not layer.weights:
            continue
        match = source_layers.get(layer.name)
        if match is None:
            result.fresh[layer.name] = "not in the source"
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        source_shapes = [tuple(w.shape) for w in match.weights]
        if shapes != source_shapes:
            result.fresh[layer.name] = f"shape {source_shapes} in the source, {shapes} here"
            continue
        layer.set_weights(match.get_weights())
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
