"""The model outside the service, as the in-process limit and both peers call it.

The service's own preprocessing: `imaging.decode` (at reduced DCT scale for versions trained that
way), then the SavedModel's `resize_image`, then `predict_pixels`.
"""

import json
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tensorflow as tf

from app.runtime.metadata import ModelMetadata
from imaging.decode import decode

TOP_K = 5


class PeerModel:
    def __init__(self, version_dir: str | None = None) -> None:
        path = Path(version_dir or os.environ["PEER_MODEL_DIR"])
        metadata = json.loads((path / "metadata.json").read_text())
        self.labels = metadata["labels"]
        # Versions trained on DCT-scaled JPEGs are decoded that way, as the service and evaluate do.
        self._size = ModelMetadata.model_validate(metadata).input.decode_size
        loaded = tf.saved_model.load(str(path))
        self._loaded = loaded  # the signatures need the object kept alive
        self._resize = loaded.signatures["resize_image"]
        self._predict = loaded.signatures["predict_pixels"]

    def prepare(self, source: bytes | BinaryIO | str | Path) -> np.ndarray:
        """Encoded image -> the model's input pixels, as the service prepares them."""
        return self._resize(image=decode(source, size=self._size))["pixels"].numpy()

    def predict(self, pixels: list[np.ndarray]) -> np.ndarray:
        """One model call for all `pixels`: probabilities [len(pixels), classes]."""
        return self._predict(pixels=np.stack(pixels))["probabilities"].numpy()

    def classify(self, pixels: list[np.ndarray]) -> list[list[dict]]:
        """One model call for all `pixels`; the top labels for each, highest score first."""
        probabilities = self.predict(pixels)
        return [
            [
                {"label": self.labels[i], "index": int(i), "score": float(row[i])}
                for i in np.argsort(-row)[:TOP_K]
            ]
            for row in probabilities
        ]
