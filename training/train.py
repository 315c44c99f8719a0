"""Train an Inception V2 network on a folder of labelled images and export the next model version."""

import datetime as dt
import functools
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from imaging.decode import decode
from training.confidence import Confidence
from training.confidence import fit as fit_confidence
from training.config import TrainConfig
from training.data import ImageFolder, Split, make_dataset, scan_image_folder
from training.export import export_model
from training.inception_v2 import ARCHITECTURES
from training.metrics import confusion_matrix, format_table, summarize
from training.preprocessing import Preprocessing
from training.report import Misclassified, TrainingReport

log = logging.getLogger(__name__)


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


def predict_dataset(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The model's probabilities [images, classes] on `dataset`, and the true labels, in order."""
    probabilities, actual = [], []
    for images, labels in dataset:
        probabilities.append(np.asarray(model(images, training=False)))
        actual.append(labels.numpy())
    return np.concatenate(probabilities), np.concatenate(actual)


def worst_classified(
    split: Split,
    probabilities: np.ndarray,
    class_names: list[str],
    image_size: tuple[int, int],
    count: int = 12,
) -> list[Misclassified]:
    """The `count` validation images with the lowest probability for their true class, decoded as the
    model saw them (at `image_size`'s JPEG scale)."""
    true_probability = probabilities[np.arange(len(split)), split.labels]
    return [
        Misclassified(
            path=split.paths[i],
            pixels=decode(split.paths[i], size=image_size),
            label=class_names[split.labels[i]],
            predicted=class_names[int(np.argmax(probabilities[i]))],
            true_probability=float(true_probability[i]),
        )
        for i in np.argsort(true_probability, kind="stable")[:count]
    ]


def train(config: TrainConfig) -> Path:
    """Train, report validation accuracy overall and per class, and export; return the version folder."""
    config.validate()
    keras.utils.set_random_seed(config.seed)
    image_size = (config.image_size, config.image_size)
    folder: ImageFolder = scan_image_folder(config.data_dir, config.validation_split, config.seed, image_size)
    preprocessing = Preprocessing(central_crop=config.central_crop)
    dataset = functools.partial(
        make_dataset,
        image_size=image_size,
        batch_size=config.batch_size,
        seed=config.seed,
        preprocessing=preprocessing,
    )
    train_ds = dataset(folder.train, shuffle=True, augment=config.augment)
    val_ds = dataset(folder.validation, shuffle=False)
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
    if config.tensorboard_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=config.tensorboard_dir))
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

    probabilities, actual = predict_dataset(model, val_ds)
    confusion = confusion_matrix(actual, probabilities.argmax(axis=1), len(folder.class_names))
    validation = summarize(confusion, folder.class_names)
    accuracy = validation["accuracy"]
    per_class = {name: row["recall"] for name, row in validation["per_class"].items()}
    print(
        f"Validation accuracy: {accuracy:.4f} ({len(folder.validation)} images, {duration:.0f} s of training)"
    )
    print(format_table(validation))

    training_summary: dict[str, Any] = {
        "params": {k: v for k, v in asdict(config).items() if k not in ("model_base_path", "checkpoint_dir")},
        "data": {"dir": str(Path(config.data_dir).resolve()), **folder.summary()},
        "metrics": {
            "val_accuracy": accuracy,
            "per_class_accuracy": per_class,
            "per_class": validation["per_class"],
            "confusion_matrix": validation["confusion_matrix"],
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
    confidence = fit_confidence(model, dataset(folder.train, shuffle=False), val_ds, len(folder.class_names))
    print(
        f"Calibration: temperature {confidence.temperature:.3f}, expected calibration error "
        f"{confidence.ece_before:.4f} before, {confidence.ece_after:.4f} after; "
        f"not-sure threshold {confidence.threshold:.4g} (flags {confidence.flagged_held_back:.1%} "
        "of the validation images)"
    )
    version_dir = export_model(
        model,
        folder.class_names,
        base_path=config.model_base_path,
        name=config.model_name,
        architecture=config.arch,
        training=training_summary,
        report=training_report(training_summary, folder, confusion, probabilities, image_size, confidence),
        preprocessing=preprocessing,
        confidence=confidence,
    )
    print(f"Exported {version_dir}")
    return version_dir


def training_report(
    summary: dict[str, Any],
    folder: ImageFolder,
    confusion: np.ndarray,
    probabilities: np.ndarray,
    image_size: tuple[int, int],
    confidence: Confidence,
) -> TrainingReport | None:
    """The report the exporter writes beside the model, or None (with a warning) without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("No training report: matplotlib is missing (pip install 'inception-v2-service[train]')")
        return None
    data = summary["data"]
    return TrainingReport(
        history=summary["metrics"]["history"],
        class_names=folder.class_names,
        confusion=confusion,
        worst=worst_classified(folder.validation, probabilities, folder.class_names, image_size),
        params=summary["params"],
        data={key: value for key, value in data.items() if key != "skipped_files"}
        | {"skipped_files": len(data["skipped_files"])},
        validation={
            "accuracy": round(summary["metrics"]["val_accuracy"], 4),
            "epochs run": summary["metrics"]["epochs_run"],
            "training time (s)": summary["duration_seconds"],
            "device": summary["device"],
            "expected calibration error": f"{confidence.ece_before:.4f} before temperature scaling, "
            f"{confidence.ece_after:.4f} after (T = {confidence.temperature:.3f})",
        },
        calibration=(confidence.reliability_before, confidence.reliability_after),
    )
