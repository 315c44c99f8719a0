"""`python -m app`: serve the model with uvicorn, one process, configured by environment variables.

On SIGTERM (or Ctrl+C) /readyz answers 503 at once while the service keeps listening and serving for
SHUTDOWN_DELAY_S, so a load balancer probing /readyz moves traffic away before connections are refused;
then the listener closes, the requests already admitted finish, and the process exits with status 0.
A second signal ends the delay early.
"""

import argparse
import logging
import os
import signal
import sys
import time
from types import FrameType

import uvicorn

from app.settings import InvalidSettings, describe_settings, load_settings

logger = logging.getLogger("app")


class Server(uvicorn.Server):
    """uvicorn's server, which marks the app as draining the moment a stop signal arrives and stops
    listening only `shutdown_delay_s` later.

    uvicorn would close the listener on its next tick (within 0.1 s), before any load balancer could
    see /readyz fail; readiness must not answer 200 from the signal on either.
    """

    def __init__(self, config: uvicorn.Config, shutdown_delay_s: float) -> None:
        super().__init__(config)
        self.shutdown_delay_s = shutdown_delay_s
        self.stop_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.config.app.state.dataplane.draining = True
        if self.stop_at is None and self.shutdown_delay_s > 0:
            self.stop_at = time.monotonic() + self.shutdown_delay_s
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.stop_at is not None and time.monotonic() >= self.stop_at:
            self.should_exit = True
        return await super().on_tick(counter)

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
    # whose C++ log threshold must be set before it loads. Where no NVIDIA driver is present, also
    # the "failed call to cuInit" the GPU-enabled wheel logs as an error at every start: not an
    # error on a CPU machine. GPUs stay visible. training/__main__.py does the same for training.
    nvidia = any(os.path.exists(device) for device in ("/dev/nvidiactl", "/dev/dxg"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if nvidia else "3")
    from app.connections import UvicornMismatch, guarded_protocol
    from app.main import create_app

    app = create_app(settings)
    try:
        protocol = guarded_protocol(
            settings.header_timeout_s, settings.max_header_bytes, settings.body_timeout_s, app.state.door
        )
    except UvicornMismatch as exc:
        print(exc, file=sys.stderr)
        return 1
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        # Slow and idle clients (docs/reliability.md): bounded headers and bodies, idle keep-alive,
        # connections; and shedding at the door.
        http=protocol,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.max_connections,
    )
    # uvicorn re-raises the stop signal once it has shut down gracefully; a drained shutdown is a
    # success, so that signal (or one arriving before uvicorn takes over) ends the process with 0.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda signum, frame: sys.exit(0))
    Server(config, settings.shutdown_delay_s).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
