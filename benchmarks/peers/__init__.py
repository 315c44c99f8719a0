"""What a user would run instead of this service, served beside it in the same benchmark run.

Each peer is a small module serving the same SavedModel with the same preprocessing
(`imaging.decode.decode`, then the SavedModel's `resize_image` and `predict_pixels`) at `/predict`,
taking the multipart body wrk sends the service. They need the `bench-peers` extra (BentoML) or
nothing beyond the service's own dependencies (FastAPI).
"""

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load import HttpProcess

ROOT = Path(__file__).parents[2]

# Peer name -> the modules it needs, and how to get them.
REQUIREMENTS = {
    "fastapi": (("fastapi", "uvicorn"), "the service's own dependencies"),
    "bentoml": (("bentoml",), 'the bench-peers extra: .venv/bin/pip install -e ".[bench-peers]"'),
}


def missing(name: str) -> str | None:
    """Why peer `name` cannot run here, or None when its dependencies are installed."""
    modules, source = REQUIREMENTS[name]
    absent = [module for module in modules if importlib.util.find_spec(module) is None]
    return f"{', '.join(absent)} not installed (from {source})" if absent else None


@dataclass
class Peer(HttpProcess):
    """One peer's server process, serving `version_dir` on 127.0.0.1."""

    name: str
    version_dir: str

    def command(self) -> list[str]:
        host, port = "127.0.0.1", str(self.port)
        if self.name == "bentoml":
            service = "benchmarks.peers.bento:Classifier"
            return [sys.executable, "-m", "bentoml", "serve", service, "--host", host, "--port", port,
                    "--working-dir", str(ROOT)]  # fmt: skip
        return [sys.executable, "-m", "benchmarks.peers.fastapi_app", "--host", host, "--port", port]

    def environment(self) -> dict[str, str]:
        # BentoML imports the service by name, so the model comes through the environment for both.
        return {"PEER_MODEL_DIR": self.version_dir, "PYTHONPATH": str(ROOT), "BENTOML_DO_NOT_TRACK": "true"}
