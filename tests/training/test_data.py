import logging

import pytest

from tests.support.datasets import write_image_folder
from training.data import DataError, augmentation, make_dataset, scan_image_folder

SIZE = (32, 32)


def test_scan_splits_all_formats_and_keeps_class_order(image_folder):
    folder = scan_image_folder(image_folder, validation_split=0.25, seed=0, image_size=SIZE)
    assert folder.class_names == ["a", "b"]
    assert len(folder.train) == 18 and len(folder.validation) == 6
    assert sorted(folder.train.paths + folder.validation.paths) == sorted(
        str(p) for p in image_folder.rglob("*.*")
    )
    assert {p.rsplit(".", 1)[1] for p in folder.train.paths + folder.validation.paths} == {
        "png",
        "jpg",
        "gif",
        "bmp",
    }


def test_scan_is_deterministic_for_a_seed(image_folder):
    first = scan_image_folder(image_folder, 0.25, seed=3, image_size=SIZE)
    assert first == scan_image_folder(image_folder, 0.25, seed=3, image_size=SIZE)
    assert (
        first.validation.paths
        != scan_image_folder(image_folder, 0.25, seed=4, image_size=SIZE).validation.paths
    )


def test_unreadable_images_are_skipped_with_a_warning_naming_them(image_folder, caplog):
    broken = image_folder / "a" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (image_folder / "b" / "notes.txt").write_text("not an image and not an image extension")
    with caplog.at_level(logging.WARNING):
        folder = scan_image_folder(image_folder, 0.25, seed=0, image_size=SIZE)
    assert folder.skipped == [str(broken)]
    assert f"Skipping unreadable image {broken}" in caplog.text
    assert str(broken) not in folder.train.paths + folder.validation.paths


def test_dataset_yields_resized_float_batches(image_folder):
    folder = scan_image_folder(image_folder, 0.25, seed=0, image_size=SIZE)
    images, labels = next(iter(make_dataset(folder.train, (24, 24), 8, shuffle=True, seed=0)))
    assert images.shape == (8, 24, 24, 3)
    assert images.dtype.name == "float32"
    assert float(images.numpy().min()) >= 0 and float(images.numpy().max()) <= 255
    assert set(labels.numpy().tolist()) <= {0, 1}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "has no class subfolders"),
        (lambda root: (root / "only").mkdir() or root, "No readable images"),
        (lambda root: write_image_folder(root, {"a": 5}), "Need at least 2 classes with images to train"),
    ],
    ids=["missing", "empty", "no-images", "one-class"],
)
def test_unusable_folders_raise_a_clear_error(tmp_path, setup, message):
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DataError, match=message):
        scan_image_folder(setup(root), 0.2, seed=0, image_size=SIZE)


def test_validation_split_must_be_a_fraction(image_folder):
    with pytest.raises(DataError, match="--validation-split must be between 0 and 1. Received: 1.5"):
        scan_image_folder(image_folder, 1.5, seed=0, image_size=SIZE)


def test_augment_changes_the_training_images_every_epoch_within_the_pixel_range(image_folder):
    import numpy as np

    split = scan_image_folder(image_folder, 0.25, seed=0, image_size=SIZE).train
    (plain, labels), *_ = list(make_dataset(split, SIZE, 64, shuffle=False, seed=0))
    augmented = make_dataset(split, SIZE, 64, shuffle=False, seed=0, augment=True)
    (first, first_labels), *_ = list(augmented)
    (second, _), *_ = list(augmented)

    assert first.shape == plain.shape
    np.testing.assert_array_equal(first_labels, labels)
    assert not np.allclose(first, plain)
    assert not np.allclose(first, second)
    assert float(np.min(first)) >= 0 and float(np.max(first)) <= 255


@pytest.mark.parametrize("flip", [False, True], ids=["no-flip", "flip"])
def test_augmentation_mirrors_images_only_when_asked(flip):
    """A mirror turns many glyphs into no class at all (a backwards 2, 3 or 7), so flips are opt-in."""
    import numpy as np

    # Bright on the left, dark on the right: crops, brightness and contrast changes keep it so.
    image = np.full((32, 32, 3), 40.0, np.float32)
    image[:, :16] = 200.0
    augmented = np.asarray(augmentation(seed=0, flip=flip)(np.repeat(image[None], 64, axis=0), training=True))

    left, right = augmented[:, :, :16].mean(axis=(1, 2, 3)), augmented[:, :, 16:].mean(axis=(1, 2, 3))
    mirrored = int(np.sum(left < right))
    if flip:
        assert 0 < mirrored < 64
    else:
        assert mirrored == 0
    assert not np.allclose(augmented, image)
