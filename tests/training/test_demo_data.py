import hashlib

from training.demo_data import CLASSES, make_demo_data


def digest(folder) -> str:
    files = sorted(folder.rglob("*.jpg"))
    return hashlib.sha256(
        b"".join(f.relative_to(folder).as_posix().encode() + f.read_bytes() for f in files)
    ).hexdigest()


def test_demo_data_writes_class_folders(tmp_path):
    make_demo_data(tmp_path / "d", images_per_class=3, size=32)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(CLASSES)
    assert all(len(list((tmp_path / "d" / c).glob("*.jpg"))) == 3 for c in CLASSES)


def test_demo_data_is_the_same_for_the_same_seed(tmp_path):
    a = make_demo_data(tmp_path / "a", images_per_class=4, size=32, seed=7)
    b = make_demo_data(tmp_path / "b", images_per_class=4, size=32, seed=7)
    c = make_demo_data(tmp_path / "c", images_per_class=4, size=32, seed=8)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
