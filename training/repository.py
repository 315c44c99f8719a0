"""Check that the model repository takes a new version, before any training time is spent.

No TensorFlow here: the trainer imports this first, so a repository it cannot write fails the run in
the first second rather than at export, minutes later.
"""

import os
import sys
import tempfile
from pathlib import Path


class RepositoryNotWritable(ValueError):
    """The trainer's user cannot create the next version under the model's folder."""


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(model_dir: Path) -> None:
    """Create `model_dir` if needed and write a scratch file in it, or raise `RepositoryNotWritable`
    naming the folder, its owner and the fix."""
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=model_dir):
            return
    except PermissionError:
        refused = model_dir if model_dir.is_dir() else nearest_existing(model_dir.parent)
    owner = refused.stat()
    raise RepositoryNotWritable(
        f"cannot write the new model version into {model_dir}: {refused} is owned by uid {owner.st_uid} "
        f"(gid {owner.st_gid}, mode {owner.st_mode & 0o777:o}) and this process runs as uid {os.getuid()}. "
        f"Run the trainer as that user (Docker Compose: HOST_UID={owner.st_uid} HOST_GID={owner.st_gid} "
        f"docker compose --profile train run --rm train), or give uid {os.getuid()} the folder "
        f"(sudo chown -R {os.getuid()}:{os.getgid()} {refused})."
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m training.repository MODEL_DIR`: exit 0 if a new version can be written there, else 2."""
    (model_dir,) = sys.argv[1:] if argv is None else argv
    try:
        check_writable(Path(model_dir))
    except RepositoryNotWritable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
