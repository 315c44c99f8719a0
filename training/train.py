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
from keras import ops

from imaging.decode import decode
from training.cluster import Worker, worker_from_environment
from training.confidence import Confidence
from training.confidence import fit as fit_confidence
from training.config import TrainConfig
from training.data import ImageFolder, Split, make_dataset, scan_image_folder
from training.distributed import (
    LostPeer,
    PerWorkerSteps,
    distribute,
    multi_worker_strategy,
    require_same_start,
    scratch_dir,
    steps_per_epoch,
)
from training.export import export_model
from training.inception_v2 import ARCHITECTURES, CLASSIFIERS
from training.init_from import Initialization, initialize_from
from training.metrics import confusion_matrix, format_table, summarize
from training.preprocessing import Preprocessing
from training.report import Misclassified, TrainingReport

log = logging.getLogger(__name__)

# Settings that are places on the trainer's machine, left out of the version's metadata.
TRAINER_PATHS = ("model_base_path", "checkpoint_dir", "tensorboard_dir")


class EpochCheckpoints(keras.callbacks.Callback):
    """Saves the weights after every epoch so an interrupted run resumes where it stopped.

    Keras' BackupAndRestore overwrites one weights file in place: an interrupt during that write
    leaves a file that cannot be restored. Here each epoch writes a new file, and a small state
    file naming it is replaced atomically afterwards, so the state always names a whole file.
    """

    STATE = "state.json"

    def __init__(self, directory: Path, settings: dict[str, Any]):
        super().__init__()
        self.directory = directory
        self.settings = settings

    def finished_epochs(self) -> int:
        """The epochs a previous run of these settings finished (0 when there is nothing to resume).

        The default folder is named after the model alone, so a run on other data or with other
        options would otherwise resume from weights trained for something else, and say nothing.
        """
        state_path = self.directory / self.STATE
        if not state_path.exists():
            return 0
        state = json.loads(state_path.read_text())
        saved = state.get("settings", self.settings)  # written before settings were recorded
        if saved != self.settings:
            changed = ", ".join(
                f"{key} {saved.get(key)!r} there, {self.settings.get(key)!r} here"
                for key in sorted(saved.keys() | self.settings.keys())
                if saved.get(key) != self.settings.get(key)
            )
            raise ValueError(
                f"{self.directory} holds epoch {state['epoch']} of a run with other settings ({changed}). "
                "Run the same command as before to resume it, or delete the folder (or pass another "
                "--checkpoint-dir) to start afresh."
            )
        return state["epoch"]

    def restore(self, model: keras.Model) -> None:
        """Load the last finished epoch's weights and optimizer state into the compiled `model`."""
        state = json.loads((self.directory / self.STATE).read_text())
        model.optimizer.build(model.trainable_variables)  # so its slots restore too
        try:
            model.load_weights(self.directory / state["weights"])
        except (ValueError, OSError) as error:
            raise ValueError(
                f"Cannot resume from {self.directory} ({error}). It was written by a run with other "
                "settings or data; delete it (or pass another --checkpoint-dir) to start afresh."
            ) from None
        log.info("Resuming after epoch %d from %s", state["epoch"], self.directory)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{epoch + 1}.weights.h5"
        self.model.save_weights(self.directory / weights)
        staged = self.directory / f".{self.STATE}.tmp"
        staged.write_text(json.dumps({"epoch": epoch + 1, "weights": weights, "settings": self.settings}))
        os.replace(staged, self.directory / self.STATE)
        for old in self.directory.glob("epoch-*.weights.h5"):
            if old.name != weights:
                old.unlink()

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def run_settings(config: TrainConfig) -> dict[str, Any]:
    """What an epoch checkpoint must share with the run that resumes it: every setting but where
    the trainer's outputs go, and the data folder wherever it was named from."""
    settings = {key: value for key, value in asdict(config).items() if key not in TRAINER_PATHS}
    settings["data_dir"] = str(Path(config.data_dir).resolve())
    return settings


def select_strategy(worker: Worker | None = None) -> tuple[tf.distribute.Strategy, str]:
    """Join the cluster as `worker`; else mirror across GPUs when there are several; mixed precision
    on any GPU; else the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if worker is not None:
        return multi_worker_strategy(worker), f"{worker.name}, one of {worker.count} workers, on " + (
            f"{len(gpus)} GPUs (mixed precision)" if gpus else "CPU"
        )
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


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from near 0 to `peak` over `warmup_steps`, `peak` held for `hold_steps`,
    then a cosine decay to 0 at `total_steps` (or `peak` held to the end, without `decay`).

    The warm-up keeps Adam's first steps, each about as large as the learning rate whatever the
    gradient, from pushing a freshly initialized network into dead ReLUs; the hold keeps the rate
    up through the epochs in which a network from scratch does most of its learning
    (docs/training.md).
    """

    def __init__(
        self, peak: float, warmup_steps: int, total_steps: int, decay: bool = True, hold_steps: int = 0
    ):
        super().__init__()
        self.peak, self.warmup_steps, self.total_steps, self.decay = peak, warmup_steps, total_steps, decay
        self.hold_steps = hold_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warming = self.peak * (step + 1) / max(self.warmup_steps, 1)
        start = self.warmup_steps + self.hold_steps
        progress = ops.clip((step - start) / max(self.total_steps - start, 1), 0, 1)
        after = self.peak * 0.5 * (1 + ops.cos(np.pi * progress)) if self.decay else self.peak
        return ops.where(step < self.warmup_steps, warming, after)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "decay": self.decay,
            "hold_steps": self.hold_steps,
        }


def smoothed_crossentropy(label_smoothing: float):
    """Sparse categorical cross-entropy against labels smoothed by `label_smoothing` (Keras' sparse
    loss has no smoothing)."""

    def loss(labels, probabilities):
        one_hot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), ops.shape(probabilities)[-1])
        return keras.losses.categorical_crossentropy(one_hot, probabilities, label_smoothing=label_smoothing)

    return loss


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with one set of trainable layers and one learning rate."""

    name: str
    epochs: range
    learning_rate: float
    train_from: str | None  # the first layer that trains (with all after it); None: every layer


def plan_phases(config: TrainConfig) -> list[Phase]:
    """One phase from scratch; from `--init-from`, the classifier alone, then the network from
    `--fine-tune-from` on at `--fine-tune-learning-rate`."""
    if config.init_from is None:
        return [Phase("training", range(config.epochs), config.learning_rate, None)]
    frozen = min(config.freeze_base_epochs, config.epochs)
    phases = []
    if frozen:
        phases.append(Phase("classifier", range(frozen), config.learning_rate, CLASSIFIERS[config.arch]))
    if config.epochs > frozen:
        phases.append(
            Phase(
                "fine-tuning",
                range(frozen, config.epochs),
                config.fine_tune_learning_rate,
                config.fine_tune_from,
            )
        )
    return phases


def set_trainable(
    model: keras.Model, train_from: str | None, fresh: set[str], freeze_batch_norm: bool
) -> None:
    """Train the layers from `train_from` on, and every layer that started fresh; freeze the rest.

    A frozen BatchNormalization layer also runs in inference mode (Keras' transfer-learning rule),
    so it keeps the statistics it was restored with.
    """
    names = [layer.name for layer in model.layers]
    start = 0
    if train_from is not None:
        start = next(
            (i for i, name in enumerate(names) if name == train_from or name.startswith(f"{train_from}_")), -1
        )
        if start < 0:
            blocks = [
                name
                for name in names
                if "_Branch_" not in name and not name.endswith(("_BatchNorm", "_relu"))
            ]
            raise ValueError(
                f"--fine-tune-from names no layer of {model.name}. Received: {train_from!r}; "
                f"blocks: {', '.join(blocks)}"
            )
    for index, layer in enumerate(model.layers):
        frozen_norm = freeze_batch_norm and isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = (index >= start and not frozen_norm) or layer.name in fresh


def compile_model(model: keras.Model, config: TrainConfig, phase: Phase, steps_per_epoch: int) -> None:
    """Compile for `phase`: Adam on the warm-up and schedule, weight decay and label smoothing."""
    warmup = min(config.warmup_epochs, len(phase.epochs)) * steps_per_epoch
    total = len(phase.epochs) * steps_per_epoch
    schedule = WarmupCosine(
        phase.learning_rate,
        warmup,
        total,
        decay=config.lr_schedule == "cosine",
        hold_steps=round(config.hold_fraction * (total - warmup)),
    )
    optimizer = keras.optimizers.Adam(schedule, weight_decay=config.weight_decay or None)
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "beta"])
    model.compile(
        optimizer=optimizer, loss=smoothed_crossentropy(config.label_smoothing), metrics=["accuracy"]
    )


def make_callbacks(
    config: TrainConfig, phase: Phase, checkpoints: EpochCheckpoints
) -> list[keras.callbacks.Callback]:
    callbacks = [
        checkpoints,
        # Not judged before the warm-up is over and the network has had an epoch at full rate: the
        # near-uniform output of the first epoch has a low validation loss that the noisy epochs
        # just after it often miss, and stopping there restored a network at chance.
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=config.patience,
            restore_best_weights=True,
            start_from_epoch=phase.epochs.start + config.warmup_epochs + 1,
            verbose=1,
        ),
    ]
    if config.tensorboard_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=config.tensorboard_dir))
    return callbacks


@dataclass(frozen=True)
class Fit:
    """What every phase of a run trains: the model, its settings, the data and where it runs."""

    model: keras.Model
    config: TrainConfig
    strategy: tf.distribute.Strategy
    train_ds: tf.data.Dataset | tf.distribute.DistributedDataset
    val_ds: tf.data.Dataset | tf.distribute.DistributedDataset
    fresh: set[str]  # the layers that started fresh under --init-from: they train in every phase
    steps_per_epoch: int


def fit(run: Fit, worker: Worker | None) -> dict[str, list[float]]:
    """Run every phase of the plan, resuming after the last finished epoch; return the history."""
    # Every worker resumes from the chief's checkpoints and saves its own each epoch, as TensorFlow's
    # multi-worker guide asks (saving may read variables through collectives); the others' go into
    # a temporary folder, deleted however the run ends.
    backup_dir = run.config.backup_dir
    settings = run_settings(run.config)
    resume = EpochCheckpoints(backup_dir, settings)
    done = resume.finished_epochs()
    if worker is not None:  # before the restore: restoring is collective, all workers or none
        require_same_start(run.strategy, worker, done, backup_dir)
    scratch = None if worker is None or worker.is_chief else scratch_dir(worker, backup_dir)
    checkpoints = EpochCheckpoints(scratch or backup_dir, settings)
    try:
        with LostPeer.raised_for(worker):
            history = fit_phases(run, done, resume, checkpoints)
    except BaseException:
        if scratch is not None:
            checkpoints.remove()
        raise
    checkpoints.remove()
    return history


def fit_phases(
    run: Fit, done: int, resume: EpochCheckpoints, checkpoints: EpochCheckpoints
) -> dict[str, list[float]]:
    """Each phase of the plan from the one `resume` stopped in, after its `done` epochs; the epochs
    saved by `checkpoints`."""
    model, config = run.model, run.config
    phases = plan_phases(config)
    # A checkpoint holds the optimizer of the phase that wrote it: compile that phase to read it.
    first = next((i for i, phase in enumerate(phases) if done - 1 in phase.epochs), 0) if done else 0
    history: dict[str, list[float]] = {}
    for index, phase in enumerate(phases[first:], first):
        with run.strategy.scope():
            set_trainable(
                model,
                phase.train_from,
                run.fresh,
                config.init_from is not None and not config.train_batch_norm,
            )
            compile_model(model, config, phase, run.steps_per_epoch)
            if index == first and done:  # in the scope: it builds the optimizer's slots, mirrored
                resume.restore(model)
        if done >= phase.epochs.stop:
            continue
        log.info(
            "Phase %s: epochs %d-%d at learning rate %g, %d trainable weights",
            phase.name,
            max(done, phase.epochs.start) + 1,
            phase.epochs.stop,
            phase.learning_rate,
            len(model.trainable_weights),
        )
        result = model.fit(
            run.train_ds,
            validation_data=run.val_ds,
            epochs=phase.epochs.stop,
            initial_epoch=max(done, phase.epochs.start),
            callbacks=make_callbacks(config, phase, checkpoints),
            shuffle=False,  # train_ds reshuffles itself each epoch
            verbose=1 if sys.stdout.isatty() else 2,  # a progress bar only where it redraws in place
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
    return history


def build_model(
    config: TrainConfig, num_classes: int, worker: Worker | None = None
) -> tuple[keras.Model, Initialization | None]:
    """The network for `config`, started from `--init-from` when given."""
    model = ARCHITECTURES[config.arch]((config.image_size, config.image_size, 3), num_classes)
    if worker is not None:
        model = PerWorkerSteps(model.inputs, model.outputs, name=model.name)
    if config.init_from is None:
        return model, None
    return model, initialize_from(model, config.init_from)


def train(config: TrainConfig) -> Path | None:
    """Train, report validation accuracy overall and per class, and export; return the version folder
    (None on a worker other than the chief, which exports nothing)."""
    config.validate()
    worker = worker_from_environment()
    if worker is not None and config.batch_size % worker.count:
        raise ValueError(
            f"--batch-size (the global batch) must divide evenly among the {worker.count} workers. "
            f"Received: {config.batch_size}"
        )
    keras.utils.set_random_seed(config.seed)
    strategy, device = select_strategy(worker)  # before any other TensorFlow op: it joins the cluster
    image_size = (config.image_size, config.image_size)
    folder: ImageFolder = scan_image_folder(config.data_dir, config.validation_split, config.seed, image_size)
    preprocessing = Preprocessing(central_crop=config.central_crop)

    def dataset(split: Split, batch_size: int, shuffle: bool) -> tf.data.Dataset:
        return make_dataset(
            split,
            image_size=image_size,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=config.seed,
            augment=shuffle and config.augment,
            flip=config.augment_flip,
            preprocessing=preprocessing,
        )

    val_ds = dataset(folder.validation, config.batch_size, shuffle=False)
    if worker is None:
        train_fit, val_fit = dataset(folder.train, config.batch_size, shuffle=True), val_ds
    else:  # each worker reads its own shard
        train_fit = distribute(strategy, folder.train, config.batch_size, dataset, training=True)
        val_fit = distribute(strategy, folder.validation, config.batch_size, dataset, training=False)
    log.info(
        "Training %s at %dx%d on %d images, validating on %d, classes: %s",
        config.arch,
        config.image_size,
        config.image_size,
        len(folder.train),
        len(folder.validation),
        ", ".join(folder.class_names),
    )

    log.info("Device: %s", device)
    with strategy.scope():
        model, initialization = build_model(config, len(folder.class_names), worker)
    fresh = set(initialization.fresh) if initialization else set()
    steps = steps_per_epoch(len(folder.train), config.batch_size, worker.count if worker else 1)
    started = time.monotonic()
    history = fit(Fit(model, config, strategy, train_fit, val_fit, fresh, steps), worker)
    duration = time.monotonic() - started
    if worker is not None and not worker.is_chief:
        print(f"Finished training as {worker.name}; the chief exports the version")
        return None

    probabilities, actual = predict_dataset(model, val_ds)
    confusion = confusion_matrix(actual, probabilities.argmax(axis=1), len(folder.class_names))
    validation = summarize(confusion, folder.class_names)
    accuracy = validation["accuracy"]
    per_class = {name: row["recall"] for name, row in validation["per_class"].items()}
    print(
        f"Validation accuracy: {accuracy:.4f} ({len(folder.validation)} images, {duration:.0f} s of training)"
    )
    print(format_table(validation))

    # The model card is shown to the service's users: no paths of the trainer's machine in it, only
    # the data folder's name and files relative to it.
    data_dir = Path(config.data_dir).resolve()
    # The schedule as run: `--decay-start`'s default depends on `--init-from`.
    params = asdict(config) | {"data_dir": data_dir.name, "decay_start": config.hold_fraction}
    if initialization is not None:
        params["init_from"] = initialization.source
    data = folder.summary() | {
        "skipped_files": [str(Path(path).resolve().relative_to(data_dir)) for path in folder.skipped]
    }
    training_summary: dict[str, Any] = {
        "params": {k: v for k, v in params.items() if k not in TRAINER_PATHS},
        "data": {"dir": data_dir.name, **data},
        "metrics": {
            "val_accuracy": accuracy,
            "per_class_accuracy": per_class,
            "per_class": validation["per_class"],
            "confusion_matrix": validation["confusion_matrix"],
            "history": history,
            "epochs_run": len(history.get("loss", [])),
        },
        "device": device,
        "duration_seconds": round(duration, 1),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    if initialization is not None:
        training_summary["initialization"] = initialization.summary()
    if keras.mixed_precision.global_policy().name != "float32" or worker is not None:
        # Export a float32 copy so the artifact serves on a CPU as well as a GPU; and one outside the
        # cluster's strategy, whose variables the chief could not save alone.
        keras.mixed_precision.set_global_policy("float32")
        exported = ARCHITECTURES[config.arch](
            (config.image_size, config.image_size, 3), len(folder.class_names)
        )
        exported.set_weights(model.get_weights())
        model = exported
    confidence = fit_confidence(
        model, dataset(folder.train, config.batch_size, shuffle=False), val_ds, len(folder.class_names)
    )
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
