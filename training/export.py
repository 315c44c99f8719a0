"""Write a trained Keras model into the model repository as a versioned, self-contained SavedModel.

Layout (TF Serving's): `<base_path>/<name>/<version>/` holding `saved_model.pb`, `variables/`
and `metadata.json`, plus `weights.npz`: every layer's weights keyed by the layer's name
(`Mixed_4a_Branch_1_Conv2d_0b_3x3/0`), which `train --init-from` starts a new run from. Neither the
SavedModel's variables nor Keras' `.weights.h5` are keyed by our layer names (both by position:
`_operations/11`, `conv2d_11`), so a change to a network's code would shift them silently.
A version appears only once complete: it is written into a hidden temporary folder beside the
versions and renamed into place, which is atomic on one file system, so a crash mid-export leaves
no folder a server would take for a version.

Signatures (the one path from image to probabilities, shared with training):
- `serving_default`: `image_bytes` (string [batch]: encoded JPEG, PNG, GIF, BMP or WebP) ->
  `probabilities` (float32 [batch, classes]). What a TF Serving client sends. Decodes in the graph
  to the pixels `imaging.decode` gives training and the service (large JPEGs at reduced DCT scale,
  recorded as `input.jpeg_scaling` in metadata.json), except that EXIF orientation is not applied
  (see training/preprocessing.py). As the service does, it decodes a GIF's first frame only and
  refuses, undecoded, an image over `imaging.decode.DEFAULT_MAX_IMAGE_PIXELS` (recorded as
  `signatures.serving_default.max_image_pixels`).
- `predict_pixels`: `pixels` (float32 [batch, height, width, 3], RGB in [0, 255], already at the
  model's input size) -> `probabilities`.
- With a `Confidence` fitted at export (training/confidence.py), both give calibrated
  `probabilities` and an `ood_score` (float32 [batch]: higher is further from the training data;
  metadata.json's `confidence.ood.threshold` separates "not sure"). Without one (versions exported
  before it, and models exported by hand) they give the softmax alone.
- `features`: `pixels` -> `logits` (float32 [batch, classes], before any temperature) and `features`
  (float32 [batch, d], the pooled features the score measures), to measure other scores and for
  embeddings.
- `resize_image`: `image` (uint8 [any height, any width, 3]) -> `pixels` (float32 [height, width, 3]),
  the version's preprocessing (training/preprocessing.py: an optional central crop, then the bilinear
  resize the training data goes through, or slim's for an imported checkpoint); the service decodes
  with `imaging.decode` and calls it. metadata.json's `input` records which.
"""

import datetime as dt
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from imaging.decode import DEFAULT_MAX_IMAGE_PIXELS
from training.confidence import Confidence, ConfidenceHead, feature_layer, logit_and_feature_model
from training.preprocessing import DEFAULT, Preprocessing, decode_and_resize
from training.report import TrainingReport

METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "weights.npz"
REPORT_FOLDER = "report"
METADATA_FORMAT_VERSION = 1


class ServingModule(tf.Module):
    """The exported graph: the Keras model plus decoding and the version's preprocessing."""

    def __init__(
        self, model: keras.Model, preprocessing: Preprocessing = DEFAULT, confidence: Confidence | None = None
    ):
        super().__init__(name="inception_v2_serving")
        self.model = model
        self.preprocessing = preprocessing
        self.confidence = ConfidenceHead(model, confidence) if confidence else None
        # A network of our own has the `features` signature; another (a benchmark's stand-in) has none.
        self.heads = logit_and_feature_model(model) if feature_layer(model) else None
        height, width, _ = model.input_shape[1:]
        self.image_size = (height, width)
        pixel_spec = tf.TensorSpec([None, height, width, 3], tf.float32, name="pixels")
        self.predict_pixels = tf.function(self._predict_pixels, input_signature=[pixel_spec])
        self.serve_bytes = tf.function(
            self._serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
        )
        self.resize_image = tf.function(
            self._resize_image, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")]
        )
        if self.heads is not None:
            self.features = tf.function(self._features, input_signature=[pixel_spec])

    def _predict_pixels(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.confidence is not None:
            return self.confidence(pixels)
        return {"probabilities": self.model(pixels, training=False)}

    def _features(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        logits, features = self.heads(pixels, training=False)
        return {"logits": tf.cast(logits, tf.float32), "features": tf.cast(features, tf.float32)}

    def _serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        height, width = self.image_size
        pixels = tf.map_fn(
            lambda b: decode_and_resize(b, self.image_size, self.preprocessing),
            image_bytes,
            fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
        )
        return self._predict_pixels(pixels)

    def _resize_image(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"pixels": self.preprocessing(image, self.image_size)}

    def signatures(self) -> dict[str, Any]:
        signatures = {
            "serving_default": self.serve_bytes,
            "predict_pixels": self.predict_pixels,
            "resize_image": self.resize_image,
        }
        if self.heads is not None:
            signatures["features"] = self.features
        return signatures


def describe_architecture(model: keras.Model, architecture: str) -> dict[str, Any]:
    """Every layer's type, output shape and parameter count, and the totals, as plain JSON."""
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return {
        "name": architecture,
        "input_shape": list(model.input_shape[1:]),
        "num_classes": int(model.output_shape[-1]),
        "total_params": int(model.count_params()),
        "trainable_params": int(trainable),
        "layers": [
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": list(layer.output.shape[1:]),
                "params": int(layer.count_params()),
            }
            for layer in model.layers
        ],
    }


def _signature_specs(module: ServingModule) -> dict[str, Any]:
    def spec(tensor_spec: tf.TensorSpec) -> dict[str, Any]:
        return {"dtype": tensor_spec.dtype.name, "shape": tensor_spec.shape.as_list()}

    height, width = module.image_size
    classes = module.model.output_shape[-1]
    outputs = {"probabilities": spec(tf.TensorSpec([None, classes], tf.float32))}
    if module.confidence is not None:
        outputs["ood_score"] = spec(tf.TensorSpec([None], tf.float32))
    pixels = {"pixels": spec(tf.TensorSpec([None, height, width, 3], tf.float32))}
    specs = {
        "serving_default": {
            "inputs": {"image_bytes": spec(tf.TensorSpec([None], tf.string))},
            "outputs": outputs,
            # Images over it are refused from their header, undecoded (training/preprocessing.py).
            "max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS,
        },
        "predict_pixels": {"inputs": pixels, "outputs": outputs},
        "resize_image": {
            "inputs": {"image": spec(tf.TensorSpec([None, None, 3], tf.uint8))},
            "outputs": {"pixels": spec(tf.TensorSpec([height, width, 3], tf.float32))},
        },
    }
    if module.heads is not None:
        specs["features"] = {
            "inputs": pixels,
            "outputs": {
                "logits": spec(tf.TensorSpec([None, classes], tf.float32)),
                "features": spec(tf.TensorSpec([None, module.heads.output[1].shape[-1]], tf.float32)),
            },
        }
    return specs


def save_layer_weights(model: keras.Model, path: Path) -> None:
    """Every layer's weights as `<layer name>/<index in layer.get_weights()>` in one .npz file."""
    np.savez(
        path,
        **{
            f"{layer.name}/{index}": value
            for layer in model.layers
            for index, value in enumerate(layer.get_weights())
        },
    )


def load_layer_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """The weights `save_layer_weights` wrote, per layer name, in `layer.get_weights()` order."""
    layers: dict[str, dict[int, np.ndarray]] = {}
    with np.load(path) as saved:
        for key in saved.files:
            name, index = key.rsplit("/", 1)
            layers.setdefault(name, {})[int(index)] = saved[key]
    return {name: [arrays[i] for i in sorted(arrays)] for name, arrays in layers.items()}


def existing_versions(model_dir: Path) -> list[int]:
    """Version numbers present under a model's folder (hidden temporary folders are not versions)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def export_model(
    model: keras.Model,
    labels: list[str],
    *,
    base_path: str | Path = "models",
    name: str = "inception_v2",
    architecture: str | None = None,
    training: dict[str, Any] | None = None,
    report: TrainingReport | None = None,
    preprocessing: Preprocessing = DEFAULT,
    confidence: Confidence | None = None,
) -> Path:
    """Write `model` as the next version of `name` under `base_path` and return its folder.

    With a `report`, its files go into the version's `report/` folder, listed in metadata.json.
    `preprocessing` is what the version's signatures do between decoding and the network.
    With a `confidence`, the signatures give calibrated probabilities and an `ood_score`, and
    metadata.json records how both were fitted and the threshold (`confidence`).
    """
    num_classes = int(model.output_shape[-1])
    if len(labels) != num_classes:
        raise ValueError(
            f"Expected one label per output class ({num_classes}). Received: {len(labels)} labels"
        )
    model_dir = Path(base_path) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    module = ServingModule(model, preprocessing, confidence)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        tf.saved_model.save(module, str(staging), signatures=module.signatures())
        save_layer_weights(model, staging / WEIGHTS_FILE)
        height, width = module.image_size
        metadata = {
            "format_version": METADATA_FORMAT_VERSION,
            "name": name,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "labels": list(labels),
            "input": {
                "height": height,
                "width": width,
                "channels": 3,
                "range": [0, 255],
                **preprocessing.metadata(),
            },
            "architecture": describe_architecture(model, architecture or model.name),
            "signatures": _signature_specs(module),
            "training": training or {},
        }
        if confidence is not None:
            metadata["confidence"] = confidence.metadata()
        if report is not None:
            metadata["report"] = {"folder": REPORT_FOLDER, **report.write(staging / REPORT_FOLDER)}
        return _publish(staging, model_dir, metadata)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _publish(staging: Path, model_dir: Path, metadata: dict[str, Any]) -> Path:
    """Rename the finished export to the next free version number."""
    while True:
        version = max(existing_versions(model_dir), default=0) + 1
        metadata["version"] = version
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=_json_default) + "\n")
        target = model_dir / str(version)
        try:
            os.rename(staging, target)
        except OSError:
            if target.exists():  # another exporter took this number first
                continue
            raise
        os.chmod(target, 0o755)  # mkdtemp makes 0700; servers may run as another user
        return target


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
