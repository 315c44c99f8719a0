"""Hostile-traffic figures for docs/reliability.md: overload, slow and idle connections.

`python -m benchmarks.reliability --model-base-path models [--baseline-checkout DIR]` starts the
service (and, with --baseline-checkout, the same scenario on another checkout's code, for a side by
side ratio), sends bounded traffic to 127.0.0.1 only, and prints JSON figures. The clients:
- raw asyncio sockets, free to hang up or trickle;
- wrk (Debian's `wrk`), for closed-loop clients that cost little of the two cores;
- h2load (Debian's `nghttp2-client`), for a burst: one C thread that opens every connection and
  sends every request at once, and logs each answer's status and time. (wrk starts a thread per
  connection, so its 384 connections arrive spread over most of a second: not a burst.)
"""

import argparse
import asyncio
import contextlib
import io
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvloop
from PIL import Image

from benchmarks.load import Route, Server, run_wrk

BOUNDARY = "reliability-boundary"


def small_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def predict_body(images: int) -> bytes:
    """A multipart body of `images` small PNGs, each a part named `file`."""
    return (
        b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + small_png(i)
            + b"\r\n"
            for i in range(images)
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )


def predict_request(images: int) -> bytes:
    body = predict_body(images)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(port: int, request: bytes, timeout: float = 60) -> tuple[int, float]:
    """One request on a fresh connection: (status, seconds); status 0 for a transport failure."""
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        try:
            writer.write(request)
            status_line = await asyncio.wait_for(reader.readline(), timeout)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await asyncio.wait_for(reader.readexactly(length), timeout)
            return int(status_line.split()[1]), time.perf_counter() - start
        finally:
            writer.close()
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        return 0, time.perf_counter() - start


def served_within(port: int, seconds: float) -> dict[str, list[float]]:
    """Per status of POST /predict, from the service's own histogram: [answers, answers within `seconds`]."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    counts: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "http_request_duration_seconds_bucket" and labels["route"] == "/predict":
                pair = counts.setdefault(labels["status"], [0.0, 0.0])
                if labels["le"] == "+Inf":
                    pair[0] = sample.value
                elif float(labels["le"]) == seconds:
                    pair[1] = sample.value
    return counts


def server_side(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, str]:
    """Share of answers the service produced within 50 ms of the request reaching the app."""
    shares = {}
    for status, (total, fast) in after.items():
        total -= before.get(status, [0, 0])[0]
        fast -= before.get(status, [0, 0])[1]
        if total:
            shares[status] = f"{fast / total:.0%} of {int(total)}"
    return shares


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


async def one_client_latency(port: int, request: bytes, count: int) -> list[float]:
    return [
        seconds for status, seconds in [await exchange(port, request) for _ in range(count)] if status == 200
    ]


def summary(results: list[tuple[int, float]]) -> dict:
    by_status: dict[int, list[float]] = {}
    for status, latency in results:
        by_status.setdefault(status, []).append(latency)
    shed, admitted = by_status.get(503, []), by_status.get(200, [])
    return {
        "requests": len(results),
        "statuses": {str(s): len(v) for s, v in sorted(by_status.items())},
        "shed_503_ms": {
            "p50": percentile(shed, 50),
            "p90": percentile(shed, 90),
            "p99": percentile(shed, 99),
        },
        "admitted_200_ms": {"p50": percentile(admitted, 50), "p99": percentile(admitted, 99)},
    }


async def burst(port: int, count: int, images: int) -> dict:
    """`count` requests of `images` PNGs sent at once, each once (the issue's 384 x 4 trial)."""
    request = predict_request(images)
    before = served_within(port, 0.05)
    results = await asyncio.gather(*(exchange(port, request) for _ in range(count)))
    within = server_side(before, served_within(port, 0.05))
    return {"requests_at_once": count, **summary(results), "server_side_within_50ms": within}


async def overload(port: int, clients: int, images: int, seconds: float, honour_retry_after: bool) -> dict:
    """`clients` closed-loop clients posting `images` PNGs each for `seconds`; then one client's recovery."""
    request, single = predict_request(images), predict_request(1)
    baseline = statistics.median(await one_client_latency(port, single, 20))
    results: list[tuple[int, float]] = []
    before = served_within(port, 0.05)
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            results.append(await exchange(port, request))
            if honour_retry_after and results[-1][0] == 503:
                await asyncio.sleep(1)  # the Retry-After the service sends

    await asyncio.gather(*(client() for _ in range(clients)))
    stopped = time.perf_counter()
    within = server_side(before, served_within(port, 0.05))
    recovered_after = None
    for _ in range(200):  # bounded: at most 200 requests
        status, latency = await exchange(port, single)
        if status == 200 and latency <= 2 * baseline:
            recovered_after = time.perf_counter() - stopped
            break
    figures = summary(results)
    return {
        "clients": clients,
        "images_per_request": images,
        "seconds": seconds,
        "honour_retry_after": honour_retry_after,
        **figures,
        "images_per_second": round(figures["statuses"].get("200", 0) * images / seconds, 1),
        "server_side_within_50ms": within,
        "one_client_before_ms": round(baseline * 1000, 1),
        "recovered_after_s": None if recovered_after is None else round(recovered_after, 2),
    }


def hammer(server: Server, clients: int, images: int, seconds: float) -> dict:
    """`clients` closed-loop clients posting `images` PNGs each, never waiting: driven by wrk, which
    times each answer itself (by_status.lua), so that 503s and 200s are told apart by a client
    that costs little of the two cores. (The asyncio client above, against a server that answers
    503 at once, itself needs hundreds of milliseconds to send and read a few hundred requests.)"""
    with tempfile.TemporaryDirectory() as scratch:
        body = Path(scratch) / "body.bin"
        body.write_bytes(predict_body(images))
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        route = Route("hammer", "/predict", body, headers, images=images)
        figures = run_wrk(server.url, route, clients, seconds, by_status=True)
    by_status = figures["by_status_us"]
    seconds_run = figures["duration_us"] / 1e6
    ms = {status: {f"p{q}": v[f"p{q}"] / 1000 for q in (50, 90, 99)} for status, v in by_status.items()}
    return {
        "clients": clients,
        "images_per_request": images,
        "seconds": round(seconds_run, 1),
        "statuses": {status: v["count"] for status, v in sorted(by_status.items())},
        "shed_503_ms": {q: ms.get("503", {}).get(q) for q in ("p50", "p90", "p99")},
        "admitted_200_ms": {q: ms.get("200", {}).get(q) for q in ("p50", "p99")},
        "images_per_second": round(by_status.get("200", {}).get("count", 0) * images / seconds_run, 1),
        "transport_errors": {k: v for k, v in figures["errors"].items() if k != "status" and v},
    }


def burst_h2load(port: int, count: int, images: int) -> dict:
    """`count` requests of `images` PNGs sent at once by h2load, one per new connection."""
    with tempfile.TemporaryDirectory() as scratch:
        body, log = Path(scratch) / "body.bin", Path(scratch) / "log.tsv"
        body.write_bytes(predict_body(images))
        subprocess.run(
            ["h2load", "--h1", "-c", str(count), "-n", str(count), "-t", "1", "-d", str(body)]
            + ["-H", f"content-type: multipart/form-data; boundary={BOUNDARY}", "--log-file", str(log)]
            + [f"http://127.0.0.1:{port}/predict"],
            capture_output=True,
            check=True,
            timeout=120,
        )
        # Each line: start (us since the epoch), status (-1: failed), microseconds to the answer's end.
        rows = [line.split("\t") for line in log.read_text().splitlines()]
    results = [(int(status), int(micros) / 1e6) for _, status, micros, *_ in rows]
    starts = [int(start) for start, *_ in rows]
    sent_over_ms = round((max(starts) - min(starts)) / 1000, 1)
    return {"requests_at_once": count, "sent_over_ms": sent_over_ms, **summary(results)}


def bursts_h2load(port: int, count: int, images: int, rounds: int) -> dict:
    """`rounds` such bursts one after the other: the figures of the median one by its 503 p50, and
    each one's 503 p50. One burst's figures move a lot from run to run; h2load waits for every
    answer, so each burst finds the service idle."""
    runs = [burst_h2load(port, count, images) for _ in range(rounds)]
    by_round = [run["shed_503_ms"]["p50"] for run in runs]
    runs.sort(key=lambda run: run["shed_503_ms"]["p50"] or 0)
    return {**runs[len(runs) // 2], "shed_503_p50_ms_by_round": by_round}


def h2load_floor(count: int, images: int, rounds: int) -> dict:
    """h2load's own cost: the same burst against a server (uvloop) that answers 503 unread."""
    answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
        writer.close()

    loop = uvloop.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(refuse, "127.0.0.1", 0, backlog=4096))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        return bursts_h2load(server.sockets[0].getsockname()[1], count, images, rounds)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


async def client_floor(count: int, images: int) -> dict:
    """The asyncio client's own cost: `count` requests at once against a server that answers 503
    without reading them. The burst's figures above include this much of the client's time."""
    answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    async with server:
        results = await asyncio.gather(*(exchange(port, predict_request(images)) for _ in range(count)))
    return {"requests_at_once": count, **summary(results)}


async def hold_slow_connections(port: int, count: int, stop: asyncio.Event) -> int:
    """Keep `count` connections open, half trickling headers and half idle; reopen any the server closes."""
    reopened = 0

    async def one(i: int) -> None:
        nonlocal reopened
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            try:
                if i % 2 == 0:
                    writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
                while not stop.is_set() and not reader.at_eof():
                    if i % 2 == 0:
                        writer.write(b"X")  # one header byte at a time
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(reader.read(1), 1.0)
            except OSError:
                pass
            finally:
                writer.close()
            if not stop.is_set():  # the server closed it
                reopened += 1

    stop_tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    await stop.wait()
    await asyncio.gather(*stop_tasks, return_exceptions=True)
    return reopened


async def slow_connections(server: Server, count: int, samples: int, hold_s: float = 15) -> dict:
    request = predict_request(1)
    rss_before = server.rss_mib()
    quiet = await one_client_latency(server.port, request, samples)
    stop = asyncio.Event()
    holder = asyncio.ensure_future(hold_slow_connections(server.port, count, stop))
    await asyncio.sleep(3)  # let them all connect
    rss_during: list[float] = []
    busy: list[float] = []
    held_until = time.perf_counter() + hold_s  # past the header timeout: the server cuts and they come back
    while len(rss_during) < samples or time.perf_counter() < held_until:
        busy.extend(await one_client_latency(server.port, request, 1))
        rss_during.append(server.rss_mib())
    stop.set()
    reopened = await holder
    return {
        "slow_connections": count,
        "one_client_p50_ms_without": percentile(quiet, 50),
        "one_client_p50_ms_with": percentile(busy, 50),
        "answered_with": f"{len(busy)}/{len(rss_during)}",
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_max_during": round(max(rss_during), 1),
        "connections_closed_by_server_and_reopened": reopened,
    }


def run(args: argparse.Namespace, cwd: str | None) -> dict:
    def service(**settings: str) -> Server:
        started = Server(
            str(args.model_base_path.resolve()), args.model_name, settings={"LOG_LEVEL": "ERROR"}
        )
        started.settings |= settings
        if cwd:
            started.settings |= {"PYTHONPATH": cwd, "PYTHONSAFEPATH": "1"}  # its `app`, not this one
        return started

    # The same burst with the queue cut to one request's images: what refusing costs the event loop
    # when almost nothing is admitted, between the client's floor and the default queue.
    with service(MAX_QUEUE_SIZE=str(args.images), MAX_FILES=str(args.images)) as small_queue:
        burst_h2load(small_queue.port, args.burst, args.images)  # its requests' image count, learnt
        refusing = bursts_h2load(small_queue.port, args.burst, args.images, args.burst_rounds)
    with service() as server:
        return {
            "burst": asyncio.run(burst(server.port, args.burst, args.images)),  # on a fresh server
            "burst_client_floor": asyncio.run(client_floor(args.burst, args.images)),
            "burst_h2load": bursts_h2load(server.port, args.burst, args.images, args.burst_rounds),
            "burst_h2load_queue_of_one_request": refusing,
            "burst_h2load_floor": h2load_floor(args.burst, args.images, args.burst_rounds),
            "overload_hammering": asyncio.run(
                overload(server.port, args.clients, args.images, args.seconds, honour_retry_after=False)
            ),
            "overload_hammering_wrk": hammer(server, args.clients, args.images, args.seconds),
            "overload_retry_after": asyncio.run(
                overload(server.port, args.clients, args.images, args.seconds, honour_retry_after=True)
            ),
            "slow": asyncio.run(slow_connections(server, args.slow, args.samples)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", type=Path, default=Path("models"))
    parser.add_argument("--model-name", default="inception_v2")
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--burst", type=int, default=384, help="requests sent at once, once each")
    parser.add_argument("--burst-rounds", type=int, default=5, help="h2load bursts of each kind, in turn")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--slow", type=int, default=300, help="slow and idle connections held open")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--baseline-checkout", help="another checkout (e.g. main) to run side by side")
    args = parser.parse_args()
    figures = {"this": run(args, None)}
    if args.baseline_checkout:
        figures["baseline"] = run(args, args.baseline_checkout)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
