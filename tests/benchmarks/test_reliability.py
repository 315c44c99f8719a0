"""The reliability benchmark end to end, at a small scale: a real service process, real h2load, wrk
and asyncio clients, all to 127.0.0.1.

It checks that every scenario runs and answers as the service promises (200 or 503, no transport
errors, every slow-connection probe answered), not any speed: docs/reliability.md quotes a full run.
"""

import json

from tests.benchmarks import run_benchmark
from tests.support.models import MODEL_NAME
from tests.tools import require


def test_a_small_run_covers_every_scenario_with_only_200_and_503(model_repository):
    require("h2load", "nghttp2-client")
    require("wrk", "wrk")
    output = run_benchmark(
        "benchmarks.reliability",
        *("--model-base-path", str(model_repository), "--model-name", MODEL_NAME, "--clients", "8"),
        *("--images", "2", "--burst", "16", "--burst-rounds", "2", "--seconds", "2", "--slow", "6"),
        *("--samples", "4"),
    )
    figures = json.loads(output)["this"]

    assert set(figures) == {
        "burst",
        "burst_client_floor",
        "burst_h2load",
        "burst_h2load_queue_of_one_request",
        "burst_h2load_floor",
        "overload_hammering",
        "overload_hammering_wrk",
        "overload_retry_after",
        "slow",
    }
    for name in ("burst", "burst_h2load", "burst_h2load_queue_of_one_request", "burst_h2load_floor"):
        statuses = figures[name]["statuses"]
        assert set(statuses) <= {"200", "503"}, (name, statuses)
        assert sum(statuses.values()) == 16, (name, statuses)
    assert figures["burst_h2load_floor"]["statuses"] == {"503": 16}  # the instant server refuses all
    for name in ("burst_h2load", "burst_h2load_queue_of_one_request", "burst_h2load_floor"):
        assert len(figures[name]["shed_503_p50_ms_by_round"]) == 2, name
    for name in ("overload_hammering", "overload_hammering_wrk", "overload_retry_after"):
        assert set(figures[name]["statuses"]) <= {"200", "503"}, (name, figures[name]["statuses"])
    for name in ("overload_hammering", "overload_retry_after"):  # each client waits for its answers
        assert figures[name]["statuses"].get("200", 0) > 0, name
    assert figures["overload_hammering_wrk"]["transport_errors"] == {}
    assert figures["overload_hammering"]["recovered_after_s"] is not None
    answered, sent = figures["slow"]["answered_with"].split("/")
    assert answered == sent and int(sent) > 0
