"""`python -m app`: serve the model with uvicorn, one process, configured by environment variables.

On SIGTERM (or Ctrl+C) /readyz answers 503 at once, the requests already admitted finish, then the
process exits with status 0.
"""

import argparse
import logging
import os
import signal
import sys
from types import FrameType

import uvicorn

from app.settings import InvalidSettings, describe_settings, load_settings

logger = logging.getLogger("app")


class Server(uvicorn.Server):
    """uvicorn's server, which marks the app as draining the moment a stop signal arrives.

    uvicorn notices the signal on its next tick (up to 0.1 s later) and then stops accepting
    connections; readiness must not answer 200 in between.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.config.app.state.draining = True
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            logger.info(
                "Ready. Try: curl -F file=@image.jpg http://%s:%d/predict", self.config.host, self.config.port
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve an image classifier from the model repository over HTTP "
        "(POST /predict, GET /model, /healthz, /readyz, /metrics, /docs).",
        epilog=describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        settings = load_settings()
    except InvalidSettings as exc:
        print(exc, file=sys.stderr)
        return 2
    # Imported only now: settings are checked (and --help answered) without loading TensorFlow,
    # whose C++ start-up chatter this variable quiets.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from app.main import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    # uvicorn re-raises the stop signal once it has shut down gracefully; a drained shutdown is a
    # success, so that signal (or one arriving before uvicorn takes over) ends the process with 0.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda signum, frame: sys.exit(0))
    Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
