import os
import subprocess
import sys
from pathlib import Path


def run_benchmark(module: str, *args: str) -> str:
    """`python -m <module> <args>` from the project's root, as a user runs it; its stdout. It must
    finish within 10 minutes and exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
