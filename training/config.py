"""The training settings, TensorFlow-free, so `python -m training --help` answers at once."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

# The builders in inception_v2.py, by name (tests/training/test_config.py keeps the two in step).
ARCHITECTURE_NAMES = ("inception_v2", "inception_v2_seed")


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    arch: str = "inception_v2"
    image_size: int = 64
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    validation_split: float = 0.2
    patience: int = 3
    seed: int = 1337
    augment: bool = False
    central_crop: float | None = None
    model_base_path: str = "models"
    model_name: str = "inception_v2"
    checkpoint_dir: str | None = None
    tensorboard_dir: str | None = None

    def validate(self) -> None:
        if self.arch not in ARCHITECTURE_NAMES:
            raise ValueError(f"--arch must be one of {sorted(ARCHITECTURE_NAMES)}. Received: {self.arch!r}")
        for field in ("image_size", "epochs", "batch_size", "patience"):
            if getattr(self, field) < 1:
                raise ValueError(
                    f"--{field.replace('_', '-')} must be at least 1. Received: {getattr(self, field)}"
                )
        if self.central_crop is not None and not 0 < self.central_crop <= 1:
            raise ValueError(f"--central-crop must be in (0, 1]. Received: {self.central_crop}")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning-rate must be positive. Received: {self.learning_rate}")
        if self.tensorboard_dir and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--tensorboard-dir needs the tensorboard package: pip install tensorboard")

    @property
    def backup_dir(self) -> Path:
        return Path(self.checkpoint_dir or Path("checkpoints") / self.model_name)
