"""Read a folder of class subfolders into training and validation `tf.data` pipelines.

The layout is `keras.utils.image_dataset_from_directory`'s (`DIR/<label>/<image>`). Images are
decoded by `imaging.decode`, the decoder the service uses for uploads (so both see the same pixels
for the same file, EXIF orientation included; large JPEGs at reduced DCT scale for the image size),
then resized by the SavedModel's resize. We list and check the files ourselves, because one
unreadable image makes `image_dataset_from_directory` fail mid-epoch; here it is skipped up front
with a warning naming it.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imaging.decode import EXTENSIONS, ImageError, decode
from training.preprocessing import DEFAULT, Preprocessing

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The data folder cannot be trained on; the message says why."""


@dataclass(frozen=True)
class Split:
    paths: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class ImageFolder:
    class_names: list[str]
    train: Split
    validation: Split
    skipped: list[str]

    def summary(self) -> dict:
        def counts(split: Split) -> dict[str, int]:
            per_class = np.bincount(split.labels, minlength=len(self.class_names))
            return {name: int(n) for name, n in zip(self.class_names, per_class, strict=True)}

        return {
            "num_train": len(self.train),
            "num_validation": len(self.validation),
            "train_per_class": counts(self.train),
            "validation_per_class": counts(self.validation),
            "skipped_files": self.skipped,
        }


def _is_readable(path: Path, size: tuple[int, int] | None) -> bool:
    """True when the shared decoder, the one training and serving use, can decode the file as
    training will (for `size`: large JPEGs at reduced DCT scale, also much quicker to check)."""
    try:
        decode(path, size=size)
    except (ImageError, OSError):
        return False
    return True


@dataclass(frozen=True)
class LabelledFiles:
    class_names: list[str]
    paths: list[str]
    labels: list[int]
    skipped: list[str]


def list_image_folder(data_dir: str | Path, size: tuple[int, int] | None) -> LabelledFiles:
    """The images of `data_dir/<label>/` readable when decoded for `size`, labelled by folder; a clear
    DataError when none."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"Data folder {root} does not exist or is not a folder.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"Data folder {root} has no class subfolders; expected {root}/<label>/<image>.")

    paths: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    class_names: list[str] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        readable = []
        for path in files:
            if _is_readable(path, size):
                readable.append(str(path))
            else:
                log.warning("Skipping unreadable image %s", path)
                skipped.append(str(path))
        if readable:
            labels.extend([len(class_names)] * len(readable))
            class_names.append(class_dir.name)
            paths.extend(readable)
        else:
            log.warning("Skipping class folder %s: it has no readable images", class_dir)
    if not paths:
        raise DataError(f"No readable images ({', '.join(EXTENSIONS)}) found under {root}.")
    return LabelledFiles(class_names, paths, labels, skipped)


def scan_image_folder(
    data_dir: str | Path, validation_split: float, seed: int, image_size: tuple[int, int]
) -> ImageFolder:
    """List, check (decoding for `image_size`) and split the images of `data_dir`, with a clear
    DataError when it can't be used."""
    if not 0 < validation_split < 1:
        raise DataError(f"--validation-split must be between 0 and 1. Received: {validation_split}")
    root = Path(data_dir)
    found = list_image_folder(root, image_size)
    class_names, paths, labels, skipped = found.class_names, found.paths, found.labels, found.skipped
    if len(class_names) < 2:
        raise DataError(
            f"Need at least 2 classes with images to train a classifier; {root} has {len(class_names)}: "
            f"{class_names}."
        )

    order = np.random.default_rng(seed).permutation(len(paths))
    num_validation = max(1, round(len(paths) * validation_split))
    if num_validation >= len(paths):
        raise DataError(
            f"{len(paths)} images are too few to hold out a validation split of {validation_split}."
        )
    shuffled_paths = [paths[i] for i in order]
    shuffled_labels = [labels[i] for i in order]
    return ImageFolder(
        class_names=class_names,
        train=Split(shuffled_paths[num_validation:], shuffled_labels[num_validation:]),
        validation=Split(shuffled_paths[:num_validation], shuffled_labels[:num_validation]),
        skipped=skipped,
    )


def augmentation(seed: int, *, flip: bool = False) -> keras.Sequential:
    """Random crops (zooming in by up to 20%) and brightness and contrast changes; with `flip`,
    mirror images left to right as well.

    Flipping is left to the caller because it changes what many images mean: a mirrored 2, 3 or 7
    is a glyph of no class, and text reads backwards. Photos of objects keep their class in a
    mirror, which is why ImageNet recipes flip.
    """
    flips = [keras.layers.RandomFlip("horizontal", seed=seed)] if flip else []
    return keras.Sequential(
        [
            *flips,
            keras.layers.RandomZoom((-0.2, 0.0), seed=seed + 1),
            keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed + 2),
            keras.layers.RandomContrast(0.2, value_range=(0, 255), seed=seed + 3),
        ],
        name="augmentation",
    )


def make_dataset(
    split: Split,
    image_size: tuple[int, int],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    augment: bool = False,
    flip: bool = False,
    preprocessing: Preprocessing = DEFAULT,
) -> tf.data.Dataset:
    """Decoded, preprocessed (cropped if so, resized) and batched (image, label) pairs, cached in
    memory after the first epoch.

    With `augment`, each epoch sees the cached images through a new random augmentation, mirrored
    too with `flip`.
    """

    def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.numpy_function(
            lambda p: decode(p.decode(), size=preprocessing.decode_size(image_size)),
            [path],
            tf.uint8,
            stateful=False,
        )
        image.set_shape([None, None, 3])
        return preprocessing(image, image_size), label

    dataset = tf.data.Dataset.from_tensor_slices((split.paths, split.labels))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment:
        augmenter = augmentation(seed, flip=flip)
        dataset = dataset.map(lambda images, labels: (augmenter(images, training=True), labels))
    return dataset.prefetch(tf.data.AUTOTUNE)
