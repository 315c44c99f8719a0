"""The training settings, TensorFlow-free, so `python -m training --help` answers at once."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

# The builders in inception_v2.py, by name (tests/training/test_config.py keeps the two in step).
ARCHITECTURE_NAMES = ("inception_v2", "inception_v2_seed")
LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    arch: str = "inception_v2"
    image_size: int = 64
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_epochs: int = 1
    decay_start: float | None = None  # None: 0.5 from scratch, 0 with --init-from (docs/training.md)
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    validation_split: float = 0.2
    patience: int = 3
    seed: int = 1337
    augment: bool = True
    augment_flip: bool = False
    central_crop: float | None = None
    init_from: str | None = None
    freeze_base_epochs: int = 2
    fine_tune_from: str | None = None
    fine_tune_learning_rate: float = 1e-4
    train_batch_norm: bool = False
    model_base_path: str = "models"
    model_name: str = "inception_v2"
    checkpoint_dir: str | None = None
    tensorboard_dir: str | None = None

    def validate(self) -> None:
        if self.arch not in ARCHITECTURE_NAMES:
            raise ValueError(f"--arch must be one of {sorted(ARCHITECTURE_NAMES)}. Received: {self.arch!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"--lr-schedule must be one of {list(LR_SCHEDULES)}. Received: {self.lr_schedule!r}"
            )
        for field in ("image_size", "epochs", "batch_size", "patience"):
            if getattr(self, field) < 1:
                raise ValueError(
                    f"--{field.replace('_', '-')} must be at least 1. Received: {getattr(self, field)}"
                )
        for field in ("warmup_epochs", "freeze_base_epochs"):
            if getattr(self, field) < 0:
                raise ValueError(
                    f"--{field.replace('_', '-')} must not be negative. Received: {getattr(self, field)}"
                )
        for field in ("learning_rate", "fine_tune_learning_rate"):
            if getattr(self, field) <= 0:
                raise ValueError(
                    f"--{field.replace('_', '-')} must be positive. Received: {getattr(self, field)}"
                )
        if self.decay_start is not None and not 0 <= self.decay_start < 1:
            raise ValueError(f"--decay-start must be in [0, 1). Received: {self.decay_start}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"--label-smoothing must be in [0, 1). Received: {self.label_smoothing}")
        if self.weight_decay < 0:
            raise ValueError(f"--weight-decay must not be negative. Received: {self.weight_decay}")
        # A TF-slim checkpoint is named by its prefix: `model.ckpt` for `model.ckpt.index` and its data.
        if self.init_from is not None and not any(
            Path(path).exists() for path in (self.init_from, f"{self.init_from}.index")
        ):
            raise ValueError(f"--init-from {self.init_from} does not exist.")
        if self.augment_flip and not self.augment:
            raise ValueError("--augment-flip needs --augment.")
        if self.central_crop is not None and not 0 < self.central_crop <= 1:
            raise ValueError(f"--central-crop must be in (0, 1]. Received: {self.central_crop}")
        if self.tensorboard_dir and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--tensorboard-dir needs the tensorboard package: pip install tensorboard")

    @property
    def hold_fraction(self) -> float:
        """`--decay-start`, or its default: hold the peak rate through half of a run from scratch, which
        does most of its learning in the middle; not when fine-tuning, whose features are learnt."""
        if self.decay_start is not None:
            return self.decay_start
        return 0.0 if self.init_from else 0.5

    @property
    def backup_dir(self) -> Path:
        return Path(self.checkpoint_dir or Path("checkpoints") / self.model_name)
