"""Programs the tests need: from Debian's packages, which .ci/run installs, or from the dev extra."""

import os
import shutil
import sys
from pathlib import Path

import pytest


def require(program: str, package: str) -> str:
    """The path of `program`. Missing, the test fails in CI (CI=true), which must install it, and is
    skipped with the reason on a developer's machine."""
    found = shutil.which(program)
    if found:
        return found
    message = f"{program} is missing: apt-get install {package} (as .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> str:
    """A command-line tool from the dev extra, installed beside this Python."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -c constraints.txt -e '.[dev]'"
    return found
