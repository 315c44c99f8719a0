"""The event loop's ceiling and profile, in their smallest form: a real server, real wrk load.

It checks that the script measures and profiles the event loop, not any speed.
"""

import json
import os
import shutil

import pytest

from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None and os.environ.get("CI") != "true", reason="needs wrk (apt-get install wrk)"
)


def documents(text: str) -> list[dict]:
    """The JSON documents printed one after the other."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
        at += len(text[at:]) - len(text[at:].lstrip())
    return found


def test_the_event_loop_is_measured_with_a_model_that_does_nothing_then_profiled():
    output = run_benchmark(
        "benchmarks.event_loop", "--clients", "2", "--seconds", "1", "--warmup", "1", "--label", "smoke"
    )

    measured, profiled = documents(output)
    assert (measured["label"], measured["clients"], measured["errors"]) == ("smoke", 2, 0)
    assert measured["requests_per_second"] > 0
    assert measured["cpu_ms_per_request"] > measured["event_loop_cpu_ms_per_request"] > 0
    ceiling = measured["one_event_loop_ceiling_requests_per_second"]
    assert ceiling == pytest.approx(1000 / measured["event_loop_cpu_ms_per_request"], rel=0.01)
    shares = profiled["event_loop_profile"]["by_package"]
    assert {"app", "fastapi", "starlette", "uvicorn"} <= set(shares)  # a request's whole path
    assert sum(shares.values()) == pytest.approx(1, abs=0.02)  # shares under 0.1 % are left out
    top = profiled["event_loop_profile"]["top_functions"]
    assert len(top) == 15
    assert all(0 < function["share"] < 1 for function in top)
    assert "epoll" not in json.dumps(profiled)  # waiting is not the loop's work


def test_the_applications_own_share_is_measured_in_process():
    output = run_benchmark("benchmarks.event_loop", "--in-process", "16", "--label", "smoke")

    [measured] = documents(output)
    assert measured["label"] == "smoke"
    figures = measured["app_cpu_ms_per_request"]
    assert list(figures) == ["/predict", "TF Serving :predict", "OIP infer (binary)"]
    assert all(milliseconds > 0 for milliseconds in figures.values())
