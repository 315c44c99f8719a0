"""The trainer refuses a model repository it cannot write before it spends any time training."""

import os
import subprocess
import sys

from tests.training.test_train import ENV, quick_args

NOBODY = 65534


def test_an_unwritable_repository_fails_before_tensorflow_loads(tmp_path, image_folder):
    models = tmp_path / "models"
    models.mkdir()
    arguments = quick_args(image_folder, models)
    command = [sys.executable, "-X", "importtime", "-m", "training", "train", *arguments]
    if os.geteuid() == 0:
        # Root writes anywhere: give the folder to another user and run the trainer without the
        # capabilities that override file permissions, as root in a container without them would.
        os.chown(models, NOBODY, NOBODY)
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    else:
        models.chmod(0o555)
    # -X importtime lists every module imported, so the test sees that TensorFlow never was.
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=ENV)
    owner = models.stat()
    assert result.returncode == 2, result.stderr
    message = result.stderr.splitlines()[-1]
    assert message == (
        f"error: cannot write the new model version into {models / 'tiny'}: {models} is owned by uid "
        f"{owner.st_uid} (gid {owner.st_gid}, mode {owner.st_mode & 0o777:o}) and this process runs as uid "
        f"{os.getuid()}. Run the trainer as that user (Docker Compose: HOST_UID={owner.st_uid} "
        f"HOST_GID={owner.st_gid} docker compose --profile train run --rm train), or give uid {os.getuid()} "
        f"the folder (sudo chown -R {os.getuid()}:{os.getgid()} {models})."
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "training.repository" in imported
    assert "tensorflow" not in imported and "keras" not in imported, "checked before TensorFlow loads"
    assert not (models / "tiny").exists()


def test_a_missing_repository_is_created(tmp_path, image_folder):
    from training.repository import check_writable

    check_writable(tmp_path / "new" / "models" / "tiny")
    assert list((tmp_path / "new" / "models" / "tiny").iterdir()) == []
