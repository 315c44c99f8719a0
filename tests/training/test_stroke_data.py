import pytest

from tests.training.test_demo_data import digest
from training.stroke_data import CLASSES, make_stroke_data


def test_stroke_data_writes_one_folder_per_digit(tmp_path):
    make_stroke_data(tmp_path / "d", images_per_class=2, size=32)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(CLASSES)
    assert len(CLASSES) == 10
    assert all(len(list((tmp_path / "d" / c).glob("*.jpg"))) == 2 for c in CLASSES)


def test_stroke_data_is_the_same_for_the_same_seed(tmp_path):
    a = make_stroke_data(tmp_path / "a", images_per_class=3, size=32, seed=7, classes=("two", "five"))
    b = make_stroke_data(tmp_path / "b", images_per_class=3, size=32, seed=7, classes=("two", "five"))
    c = make_stroke_data(tmp_path / "c", images_per_class=3, size=32, seed=8, classes=("two", "five"))
    assert sorted(p.name for p in a.iterdir()) == ["five", "two"]
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_unknown_classes_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Received: \['eleven'\]"):
        make_stroke_data(tmp_path / "d", classes=("one", "eleven"))
