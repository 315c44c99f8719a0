"""Train an Inception V2 network on a folder of labelled images and export the next model version."""

import datetime as dt
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.data import ImageFolder, make_dataset, scan_image_folder
from training.export import export_model
from training.inception_v2 import ARCHITECTURES

log = logging.getLogger(__name__)


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
    model_base_path: str = "models"
    model_name: str = "inception_v2"
    checkpoint_dir: str | None = None

    def validate(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"--arch must be one of {sorted(ARCHITECTURES)}. Received: {self.arch!r}")
        for field in ("image_size", "epochs", "batch_size", "patience"):
            if getattr(self, field) < 1:
                raise ValueError(
                    f"--{field.replace('_', '-')} must be at least 1. Received: {getattr(self, field)}"
                )
        if self.learning_rate <= 0:
            raise ValueError(f"--learning-rate must be positive. Received: {self.learning_rate}")

    @property
    def backup_dir(self) -> Path:
        return Path(self.checkpoint_dir or Path("checkpoints") / self.model_name)


class EpochCheckpoints(keras.callbacks.Callback):
    """Saves the weights after every epoch so an interrupted run resumes where it stopped.

    Keras' BackupAndRestore overwrites one weights file in place: an interrupt during that write
    leaves a file that cannot be restored. Here each epoch writes a new file, and a small state
    file naming it is replaced atomically afterwards, so the state always names a whole file.
    """

    STATE = "state.json"

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory

    def restore(self, model: keras.Model) -> int:
        """Load the last finished epoch's weights into `model`; return the epoch to start from."""
        state_path = self.directory / self.STATE
        if not state_path.exists():
            return 0
        state = json.loads(state_path.read_text())
        model.optimizer.build(model.trainable_variables)  # so its slots restore too
        try:
            model.load_weights(self.directory / state["weights"])
        except (ValueError, OSError) as error:
            raise ValueError(
                f"Cannot resume from {self.directory} ({error}). It was written by a run with other "
                "settings or data; delete it (or pass another --checkpoint-dir) to start afresh."
            ) from None
        log.info("Resuming after epoch %d from %s", state["epoch"], self.directory)
        return state["epoch"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{epoch + 1}.weights.h5"
        self.model.save_weights(self.directory / weights)
        staged = self.directory / f".{self.STATE}.tmp"
        staged.write_text(json.dumps({"epoch": epoch + 1, "weights": weights}))
        os.replace(staged, self.directory / self.STATE)
        for old in self.directory.glob("epoch-*.weights.h5"):
            if old.name != weights:
                old.unlink()

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def select_strategy() -> tuple[tf.distribute.Strategy, str]:
    """Mirror across GPUs when there are several; mixed precision on any GPU; else the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), f"{len(gpus)} GPUs (MirroredStrategy, mixed precision)"
    if gpus:
        return tf.distribute.get_strategy(), "1 GPU (mixed precision)"
    return tf.distribute.get_strategy(), "CPU"


def per_class_accuracy(
    model: keras.Model, dataset: tf.data.Dataset, class_names: list[str]
) -> tuple[float, dict[str, float | None]]:
    """Overall and per-class accuracy of `model` on `dataset` (None for a class with no examples)."""
    predicted, actual = [], []
    for images, labels in dataset:
        predicted.append(np.argmax(model(images, training=False), axis=-1))
        actual.append(labels.numpy())
    predicted, actual = np.concatenate(predicted), np.concatenate(actual)
    per_class = {}
    for index, name in enumerate(class_names):
        mask = actual == index
        per_class[name] = float(np.mean(predicted[mask] == index)) if mask.any() else None
    return float(np.mean(predicted == actual)), per_class


def train(config: TrainConfig) -> Path:
    """Train, report validation accuracy overall and per class, and export; return the version folder."""
    config.validate()
    keras.utils.set_random_seed(config.seed)
    folder: ImageFolder = scan_image_folder(config.data_dir, config.validation_split, config.seed)
    image_size = (config.image_size, config.image_size)
    train_ds = make_dataset(folder.train, image_size, config.batch_size, shuffle=True, seed=config.seed)
    val_ds = make_dataset(folder.validation, image_size, config.batch_size, shuffle=False, seed=config.seed)
    log.info(
        "Training %s at %dx%d on %d images, validating on %d, classes: %s",
        config.arch,
        config.image_size,
        config.image_size,
        len(folder.train),
        len(folder.validation),
        ", ".join(folder.class_names),
    )

    strategy, device = select_strategy()
    log.info("Device: %s", device)
    with strategy.scope():
        model = ARCHITECTURES[config.arch]((config.image_size, config.image_size, 3), len(folder.class_names))
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )

    checkpoints = EpochCheckpoints(config.backup_dir)
    initial_epoch = checkpoints.restore(model)
    callbacks = [
        checkpoints,
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True, verbose=1
        ),
    ]
    started = time.monotonic()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        shuffle=False,  # train_ds reshuffles itself each epoch
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar only where it redraws in place
    )
    duration = time.monotonic() - started
    checkpoints.remove()

    accuracy, per_class = per_class_accuracy(model, val_ds, folder.class_names)
    print(
        f"Validation accuracy: {accuracy:.4f} ({len(folder.validation)} images, {duration:.0f} s of training)"
    )
    for name, value in per_class.items():
        print(f"  {name:<20} {'n/a' if value is None else f'{value:.4f}'}")

    training_summary: dict[str, Any] = {
        "params": {k: v for k, v in asdict(config).items() if k not in ("model_base_path", "checkpoint_dir")},
        "data": {"dir": str(Path(config.data_dir).resolve()), **folder.summary()},
        "metrics": {
            "val_accuracy": accuracy,
            "per_class_accuracy": per_class,
            "history": {key: [float(v) for v in values] for key, values in history.history.items()},
            "epochs_run": len(history.history.get("loss", [])),
        },
        "device": device,
        "duration_seconds": round(duration, 1),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    if keras.mixed_precision.global_policy().name != "float32":
        # Export a float32 copy so the artifact serves on a CPU as well as a GPU.
        keras.mixed_precision.set_global_policy("float32")
        exported = ARCHITECTURES[config.arch](
            (config.image_size, config.image_size, 3), len(folder.class_names)
        )
        exported.set_weights(model.get_weights())
        model = exported
    version_dir = export_model(
        model,
        folder.class_names,
        base_path=config.model_base_path,
        name=config.model_name,
        architecture=config.arch,
        training=training_summary,
    )
    print(f"Exported {version_dir}")
    return version_dir
