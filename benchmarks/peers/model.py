"""The model as both peers call it: the service's decoder, the SavedModel's resize and predict."""

import json
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tensorflow as tf

from imaging.decode import decode

TOP_K = 5


class PeerModel:
    def __init__(self, version_dir: str | None = None) -> None:
        path = Path(version_dir or os.environ["PEER_MODEL_DIR"])
        self.labels = json.loads((path / "metadata.json").read_text())["labels"]
        loaded = tf.saved_model.load(str(path))
        self._loaded = loaded  # the signatures need the object kept alive
        self._resize = loaded.signatures["resize_image"]
        self._predict = loaded.signatures["predict_pixels"]

    def prepare(self, source: bytes | BinaryIO | str | Path) -> np.ndarray:
        """Encoded image -> the model's input pixels, as the service prepares them."""
        return self._resize(image=decode(source))["pixels"].numpy()

    def classify(self, pixels: list[np.ndarray]) -> list[list[dict]]:
        """One model call for all `pixels`; the top labels for each, highest score first."""
        probabilities = self._predict(pixels=np.stack(pixels))["probabilities"].numpy()
        return [
            [
                {"label": self.labels[i], "index": int(i), "score": float(row[i])}
                for i in np.argsort(-row)[:TOP_K]
            ]
            for row in probabilities
        ]
