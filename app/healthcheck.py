"""`python -m app.healthcheck`: exit 0 if the local service is ready, else 1.

A container HEALTHCHECK that needs no curl. Standard library only, so it starts in milliseconds.
"""

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 2.0


def readiness_url() -> str:
    """/readyz on this machine, at the HOST and PORT the service listens on."""
    host = os.environ.get("HOST", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: ask over loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('PORT', '8000')}/readyz"


def main() -> int:
    try:
        with urllib.request.urlopen(readiness_url(), timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except (OSError, ValueError):  # refused, timed out, 503 (HTTPError), or a malformed HOST/PORT
        return 1


if __name__ == "__main__":
    sys.exit(main())
