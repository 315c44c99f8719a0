"""TF-slim's `inception_v2` checkpoint, read into the weights of our Keras network, layer by layer.

TF-slim's model zoo published ImageNet weights for Inception V2 (`inception_v2_2016_08_28.tar.gz`,
holding `inception_v2.ckpt`). Our `inception_v2` (training/inception_v2.py) is slim's network
layer for layer, so the checkpoint maps onto it exactly: 277 tensors onto 138 Keras layers.

How to call it:

    from training.slim_checkpoint import read_checkpoint, assign_all

    layers = read_checkpoint("inception_v2.ckpt")  # the prefix; V1 (one file) or V2 (.index + .data)
    layers["Mixed_3b_Branch_1_Conv2d_0b_3x3"].arrays  # [kernel], in layer.get_weights() order
    assign_all(model, layers)  # every weight on both sides, or CheckpointMismatch naming each problem

`read_checkpoint` returns, per Keras layer name, the arrays in `layer.get_weights()` order and the
slim tensors they came from, so a caller may also take only the layers whose shapes fit its own
model (fine-tuning with another label set): `model.get_layer(name).set_weights(layer.arrays)`.

The one mapping, slim -> Keras (slim's `InceptionV2/<scope>/<variable>`):
- `<scope>` with `/` as `_` is the Keras layer: `Mixed_3b/Branch_1/Conv2d_0b_3x3` ->
  `Mixed_3b_Branch_1_Conv2d_0b_3x3`, `Logits/Conv2d_1c_1x1` -> `Logits_Conv2d_1c_1x1`;
- `<scope>/BatchNorm/{beta,moving_mean,moving_variance}` is the layer `<that name>_BatchNorm`
  (slim's batch norm has no gamma; ours is built with `scale=False`, epsilon 0.001 as slim's);
- variables in the Keras order: `depthwise_weights`, `pointwise_weights` (the separable stem
  `Conv2d_1a_7x7`), `weights`, `biases`, then `beta`, `moving_mean`, `moving_variance`.
Shapes need no transposing: slim and Keras both store kernels as [height, width, in, out] and the
depthwise kernel as [height, width, in, multiplier].
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

SCOPE = "InceptionV2"
# Tensors a slim training run saves beside the model's own; not weights of the network.
IGNORED = ("global_step",)
# Per layer, slim's variable names in the order Keras keeps the layer's weights.
KERAS_ORDER = (
    "depthwise_weights",
    "pointwise_weights",
    "weights",
    "biases",
    "BatchNorm/beta",
    "BatchNorm/moving_mean",
    "BatchNorm/moving_variance",
)
BATCH_NORM = "BatchNorm/"


class CheckpointMismatch(ValueError):
    """The checkpoint and the network do not match weight for weight; the message lists each problem."""


@dataclass(frozen=True)
class SlimLayer:
    """One Keras layer's weights from the checkpoint, in `layer.get_weights()` order."""

    tensors: tuple[str, ...]  # slim's names, one per array
    arrays: tuple[np.ndarray, ...]


def keras_weight(tensor: str) -> tuple[str, int] | None:
    """The Keras layer name and the slot in its weights for slim's `InceptionV2/<scope>/<variable>`;
    None for a tensor of no such name (another network's, or an optimizer's)."""
    if not tensor.startswith(f"{SCOPE}/"):
        return None
    path = tensor.removeprefix(f"{SCOPE}/")
    for variable in KERAS_ORDER:
        if path.endswith(f"/{variable}"):
            scope = path.removesuffix(f"/{variable}").replace("/", "_")
            layer = f"{scope}_BatchNorm" if variable.startswith(BATCH_NORM) else scope
            return layer, KERAS_ORDER.index(variable)
    return None


def checkpoint_files(prefix: str | Path) -> list[Path]:
    """The files holding the weights: the one V1 file, or the V2 `.index` and `.data-*` files."""
    prefix = Path(prefix)
    if prefix.is_file():
        return [prefix]
    return sorted(
        path
        for path in prefix.parent.glob(f"{prefix.name}.*")
        if path.suffix == ".index" or path.name.startswith(f"{prefix.name}.data-")
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(prefix: str | Path) -> dict[str, SlimLayer]:
    """The checkpoint's weights per Keras layer name; a `ValueError` says why a file cannot be read."""
    if not checkpoint_files(prefix):
        raise ValueError(
            f"{prefix}: no checkpoint there; give the prefix, as `inception_v2.ckpt` from TF-slim's "
            "inception_v2_2016_08_28.tar.gz (a V2 checkpoint's prefix has .index and .data-* files beside it)"
        )
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]  # TensorFlow's messages run to many lines
        raise ValueError(f"{prefix}: not a checkpoint TensorFlow can read ({reason})") from None
    names = sorted(name for name in reader.get_variable_to_shape_map() if name not in IGNORED)
    mapped = {name: keras_weight(name) for name in names}
    unmapped = [name for name, weight in mapped.items() if weight is None]
    if len(unmapped) == len(names):
        found = sorted({name.split("/")[0] for name in names})
        raise CheckpointMismatch(
            f"{prefix}: not a TF-slim inception_v2 checkpoint: no {SCOPE}/ variables (found {found[:5]})"
        )
    if unmapped:
        raise CheckpointMismatch(f"{prefix}: tensors no layer of ours takes: {', '.join(unmapped)}")
    slots: dict[str, dict[int, str]] = {}
    for name, (layer, slot) in mapped.items():
        slots.setdefault(layer, {})[slot] = name
    return {
        layer: SlimLayer(
            tensors=tuple(by_slot[slot] for slot in sorted(by_slot)),
            arrays=tuple(reader.get_tensor(by_slot[slot]) for slot in sorted(by_slot)),
        )
        for layer, by_slot in slots.items()
    }


def slim_names(layer: keras.layers.Layer) -> tuple[str, ...]:
    """The slim tensors that `layer`'s weights come from, in its weights' order (the inverse mapping)."""
    scope = re.sub(r"(Branch_\d)_", r"\1/", layer.name.replace("_Branch_", "/Branch_"))
    scope = f"{SCOPE}/{scope.replace('Logits_', 'Logits/')}"
    if isinstance(layer, keras.layers.SeparableConv2D):
        variables = ["depthwise_weights", "pointwise_weights"] + ["biases"] * layer.use_bias
    elif isinstance(layer, keras.layers.Conv2D):
        variables = ["weights"] + ["biases"] * layer.use_bias
    elif isinstance(layer, keras.layers.BatchNormalization) and not layer.scale:
        scope = scope.removesuffix("_BatchNorm")
        variables = [f"{BATCH_NORM}{name}" for name in ("beta", "moving_mean", "moving_variance")]
    else:
        raise CheckpointMismatch(
            f"layer {layer.name} ({type(layer).__name__}) has no counterpart in slim's {SCOPE}"
        )
    return tuple(f"{scope}/{variable}" for variable in variables)


def assign_all(model: keras.Model, layers: dict[str, SlimLayer]) -> int:
    """Set every weight of `model` from `layers`, using every tensor; return how many were assigned.

    Raises `CheckpointMismatch` naming each tensor the network needs and the checkpoint lacks, each
    one no layer takes, and each of the wrong shape (with both shapes), before assigning anything.
    """
    needed = {
        name: weight
        for layer in model.layers
        if layer.weights
        for name, weight in zip(slim_names(layer), layer.weights, strict=True)
    }
    given = {
        name: array
        for layer in layers.values()
        for name, array in zip(layer.tensors, layer.arrays, strict=True)
    }
    problems = [
        *(
            f"missing from the checkpoint: {name} {list(needed[name].shape)}"
            for name in needed
            if name not in given
        ),
        *(f"no layer takes {name} {list(given[name].shape)}" for name in given if name not in needed),
        *(
            f"{name} has shape {list(given[name].shape)}; "
            f"{needed[name].path} needs {list(needed[name].shape)}"
            for name in needed
            if name in given and tuple(given[name].shape) != tuple(needed[name].shape)
        ),
    ]
    if problems:
        raise CheckpointMismatch(
            f"the checkpoint does not match the network ({len(problems)} problems):\n  "
            + "\n  ".join(problems)
        )
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([given[name] for name in slim_names(layer)])
    return len(given)


def num_classes(layers: dict[str, SlimLayer]) -> int:
    """The classes the checkpoint's classifier gives (1001 for ImageNet with slim's background class)."""
    logits = layers.get("Logits_Conv2d_1c_1x1")
    if logits is None:
        raise CheckpointMismatch(
            f"missing from the checkpoint: {SCOPE}/Logits/Conv2d_1c_1x1/weights and biases"
        )
    return int(logits.arrays[0].shape[-1])
