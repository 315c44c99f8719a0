"""Targets as ratios to the in-process limit, and the report: JSON, a Markdown table and a PNG."""

import json
from pathlib import Path

PEER_TITLES = {
    "fastapi": "FastAPI, the tutorial way (a model call per request)",
    "bentoml": "BentoML, adaptive batching",
}
START, END = "<!-- benchmark results: start -->", "<!-- benchmark results: end -->"


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator; None when the denominator is 0 (a level that answered nothing in time)."""
    return round(numerator / denominator, 3) if denominator else None


def shown(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def at_clients(levels: list[dict], clients: int) -> dict:
    """The level at `clients`, or the busiest one when the run had none at that count (--quick)."""
    return next((lv for lv in levels if lv["clients"] == clients), levels[-1])


def peer_ratios(result: dict, peer: dict) -> list[dict]:
    """The service's throughput over the peer's, level by level, then one client after the burst."""
    pairs = [
        *zip(result["batching"], peer["levels"], strict=True),
        (result["after_burst"], peer["after_burst"]),
    ]
    return [
        {
            "clients": ours["clients"],
            "after_burst": ours is result["after_burst"],
            "throughput_ratio": ratio(ours["images_per_second"], theirs["images_per_second"]),
            "p99_ratio": ratio(ours["p99_ms"], theirs["p99_ms"]),
        }
        for ours, theirs in pairs
    ]


def lowest_ratio(ratios: list[dict]) -> float | None:
    """The lowest throughput ratio; a level the peer answered nothing in (None) is one the service leads."""
    return min((r["throughput_ratio"] for r in ratios if r["throughput_ratio"] is not None), default=None)


def allowed_best(limit: dict, clients: int) -> float:
    """The in-process rate at the best batch size `clients` allow: no batch holds more images than
    there are clients sending them."""
    by_batch = {int(size): rate for size, rate in limit["images_per_second_by_batch"].items()}
    return max(rate for size, rate in by_batch.items() if size <= clients)


# Memory may grow by this much after the second peak and still count as flat: pages come and go.
RSS_NOISE = 1.01


def evaluate_targets(result: dict) -> list[dict]:
    limit = result["in_process"]
    first, busy = result["batching"][0], at_clients(result["batching"], 64)
    busiest = result["batching"][-1]["clients"]
    loaded = [
        (ours, off)
        for ours, off in zip(result["batching"], result["per_request"], strict=True)
        if ours["clients"] >= 8
    ]
    span = f"{loaded[0][0]['clients']} to {loaded[-1][0]['clients']} clients"
    peaks = result["rss_mib_after_peaks"]

    def target(name: str, measured: float | None, bound: float, at_least: bool) -> dict:
        met = measured is not None and (measured >= bound if at_least else measured <= bound)
        return {"name": name, "measured": measured, "bound": bound, "met": met}

    def lowest(ratios: list[float | None]) -> float | None:
        return None if None in ratios else min(ratios)

    targets = [
        target(
            f"{span}, the lowest: throughput / in-process best at a batch no larger than the clients >= 0.95",
            lowest(
                [ratio(ours["images_per_second"], allowed_best(limit, ours["clients"])) for ours, _ in loaded]
            ),
            0.95,
            True,
        ),
        target(
            f"{span}, the lowest: throughput / the batching-off row's >= 1",
            lowest([ratio(ours["images_per_second"], off["images_per_second"]) for ours, off in loaded]),
            1.0,
            True,
        ),
        target(
            f"{busy['clients']} clients: p99 / p50 <= 1.25",
            ratio(busy["p99_ms"], busy["p50_ms"]),
            1.25,
            False,
        ),
        target(
            f"{first['clients']} client: p50 / in-process batch-1 time <= 1.05",
            ratio(first["p50_ms"], limit["batch1_ms"]),
            1.05,
            False,
        ),
        target(
            f"1 client after the {busiest}-client level: p50 / in-process batch-1 time <= 1.2",
            ratio(result["after_burst"]["p50_ms"], limit["batch1_ms"]),
            1.2,
            False,
        ),
        target(
            f"RSS after peaks 3 to {len(peaks)} / after peak 2 <= {RSS_NOISE} (no growth)",
            ratio(max(peaks[2:]), peaks[1]),
            RSS_NOISE,
            False,
        ),
        *[
            target(
                f"{route['route']} at {route['clients']} clients: throughput / /predict >= 0.95",
                route["throughput_ratio"],
                0.95,
                True,
            )
            for route in result["protocols"][1:]
        ],
        target(
            "decoding at 1/8 DCT scale: speed / djpeg -scale 1/8's >= 0.9",
            result["decode_against_djpeg"]["speed_ratio"],
            0.9,
            True,
        ),
    ]
    targets += [
        target(
            f"ahead of {peer['name']} at every level and after the burst: lowest throughput ratio >= 1",
            lowest_ratio(peer_ratios(result, peer)),
            1.0,
            True,
        )
        for peer in result["peers"]
    ]
    return targets


def tax_rows(result: dict, clients: int) -> list[dict]:
    """The serving tax per route at `clients`, and the peers' at the same level: CPU per request in
    all, in the main threads (the event loop), beyond the in-process CPU of one image at batch 1,
    and (the service only) beyond its own timings of decoding and the model."""
    one_image = result["in_process"]["batch1_cpu_ms"]
    levels = [(f"service {route['route']}", route) for route in result["protocols"]]
    levels += [(PEER_TITLES[peer["name"]], at_clients(peer["levels"], clients)) for peer in result["peers"]]
    return [
        {
            "server": name,
            "clients": level["clients"],
            "cpu_ms_per_request": level["cpu_ms_per_request"],
            "main_thread_cpu_ms_per_request": level["main_thread_cpu_ms_per_request"],
            "beyond_in_process_ms": round(level["cpu_ms_per_request"] - one_image, 3),
            "tax_ms_per_request": level.get("tax_ms_per_request"),
        }
        for name, level in levels
    ]


def _level_rows(levels: list[dict], best: float) -> list[str]:
    return [
        f"| {lv['clients']} | {lv['images_per_second']:.1f} | {lv['images_per_second'] / best:.2f} | "
        f"{lv['p50_ms']:.1f} | {lv['p90_ms']:.1f} | {lv['p99_ms']:.1f} | "
        f"{shown(ratio(lv['p99_ms'], lv['p50_ms']))} | "
        f"{lv['errors']} | {lv['client_cpu_share']:.1%} | {lv['server_cpu_share']:.1%} |"
        for lv in levels
    ]


def _protocol_rows(levels: list[dict]) -> list[str]:
    """The standard protocols' overhead: each route against /predict, measured one after the other."""
    return [
        f"The same image through each API at {levels[0]['clients']} clients, one after the other "
        "(ratios to /predict):",
        "",
        "| route | img/s | / predict | p50 ms | p50 / predict | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {lv['route']} (`{lv['path']}`) | {lv['images_per_second']:.1f} | "
            f"{shown(lv['throughput_ratio'])} | {lv['p50_ms']:.1f} | {shown(lv['p50_ratio'])} | "
            f"{lv['p99_ms']:.1f} | {lv['errors']} |"
            for lv in levels
        ],
        "",
    ]


LEVEL_HEADER = (
    "| clients | img/s | / in-process best | p50 ms | p90 ms | p99 ms | p99/p50 | errors | client CPU "
    "| server CPU |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
)


def _levels_table(levels: list[dict], best: float, after_burst: dict | None = None) -> list[str]:
    rows = _level_rows(levels, best)
    if after_burst is not None:
        rows += [
            row.replace("| 1 |", "| 1 (after the burst) |", 1) for row in _level_rows([after_burst], best)
        ]
    return [*LEVEL_HEADER, *rows, ""]


def _peer_lines(result: dict, best: float, skipped: dict[str, str]) -> list[str]:
    lines = ["#### Peers: the same SavedModel, preprocessing and request body, one process each", ""]
    for peer in result["peers"]:
        lines += [
            f"{PEER_TITLES[peer['name']]}: ready in {peer['ready_seconds']} s, RSS "
            f"{peer['rss_mib_after_warmup']} MiB after start, {peer['rss_mib_after_requests']} MiB after its "
            "levels:",
            "",
            *_levels_table(peer["levels"], best, peer["after_burst"]),
        ]
    if result["peers"]:
        names = [peer["name"] for peer in result["peers"]]
        ratios = {peer["name"]: peer_ratios(result, peer) for peer in result["peers"]}
        lines += [
            "The service against each peer (throughput ratio > 1: the service is ahead; p99 ratio < 1: "
            "the service's tail is shorter):",
            "",
            "| clients | " + " | ".join(f"/ {n} throughput | / {n} p99" for n in names) + " |",
            "| ---: |" + " ---: | ---: |" * len(names),
            *[
                f"| {'1 (after the burst)' if row['after_burst'] else row['clients']} | "
                + " | ".join(
                    f"{shown(ratios[n][i]['throughput_ratio'])} | {shown(ratios[n][i]['p99_ratio'])}"
                    for n in names
                )
                + " |"
                for i, row in enumerate(ratios[names[0]])
            ],
            "",
        ]
    not_measured = [f"Not measured: {name}, {reason}." for name, reason in skipped.items()]
    return [*lines, *not_measured, *([""] if not_measured else [])]


def _curve_lines(curves: dict, images: dict) -> list[str]:
    def row(first: str, point: dict) -> str:
        requests_per_second = point["images_per_second"] / point["images_per_request"]
        return (
            f"| {first} | {point['images_per_second']:.1f} | {requests_per_second:.1f} | "
            f"{point['p50_ms']:.1f} | {point['p99_ms']:.1f} | {point['errors']} | "
            f"{point['server_cpu_share']:.1%} |"
        )

    header = "| img/s | requests/s | p50 ms | p99 ms | errors | server CPU |"
    rule = "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    return [
        f"#### How the cost grows: files per request and image size, at {curves['clients']} clients",
        "",
        f"| files per request {header}",
        rule,
        *[row(str(point["images_per_request"]), point) for point in curves["files"]],
        "",
        f"| image {header}",
        rule,
        *[row(_image_name(point["image"], images), point) for point in curves["sizes"]],
        "",
    ]


def _image_name(label: str, images: dict) -> str:
    width, height = images[label]["size"]
    return f"{label} JPEG, {width}x{height}, {images[label]['bytes'] / 1024:,.0f} KiB"


def _batch_choice_line(choice: dict) -> str:
    curve = ", ".join(f"{t['batch_size']}: {t['images_per_second']:.1f}" for t in choice["curve"])
    waits = (
        f"waiting up to {choice['batch_timeout_ms']:g} ms" if choice["batch_timeout_ms"] else "never waiting"
    )
    return (
        f"Batching the service chose at warm-up: batches of up to **{choice['max_batch_size']}** images, "
        f"{waits} for one to fill (the model's img/s by batch size, timed at warm-up: "
        f"{curve or 'not timed'})."
    )


def _revised_line(before: dict, after: dict | None) -> str:
    if after is None:  # results written before the benchmark read it again
        return ""
    if after.get("revisions", 0) == before.get("revisions", 0):
        return " Live batches did not revise it during the levels."
    timeout = after["batch_timeout_ms"]
    waits = f"waiting up to {timeout:g} ms" if timeout else "never waiting"
    return (
        f" Live batches revised it {after['revisions'] - before.get('revisions', 0)} times during the "
        f"levels, to batches of up to **{after['max_batch_size']}**, {waits}."
    )


def _tax_lines(result: dict) -> list[str]:
    rows = tax_rows(result, result["protocols"][0]["clients"])
    return [
        f"The serving tax at {rows[0]['clients']} clients: CPU milliseconds per one-image request (the "
        f"in-process CPU of one image at batch 1 is {result['in_process']['batch1_cpu_ms']:.2f} ms):",
        "",
        "| server | CPU ms / request | main thread (event loop) | beyond the in-process image | "
        "beyond its own decode + model timings |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {row['server']} | {row['cpu_ms_per_request']:.2f} | "
            f"{row['main_thread_cpu_ms_per_request']:.2f} | {row['beyond_in_process_ms']:.2f} | "
            f"{shown(row['tax_ms_per_request'])} |"
            for row in rows
        ],
        "",
    ]


def _djpeg_line(cost: dict) -> str:
    image = cost["image"]
    return (
        f"Decoding the large JPEG ({image['width']}x{image['height']}) at 1/8 DCT scale, in turns with "
        f"`djpeg -scale 1/8` on the same file: {cost['decode_cpu_ms_per_megapixel']:.2f} CPU ms per "
        f"megapixel against djpeg's {cost['djpeg_cpu_ms_per_megapixel']:.2f} (less its "
        f"{cost['djpeg_start_up_cpu_ms']:.2f} ms to start): {cost['speed_ratio']:.2f} of its speed."
    )


def model_section(result: dict, figure: str, images: dict, skipped: dict[str, str]) -> str:
    limit = result["in_process"]
    best = limit["best_images_per_second"]
    by_batch = ", ".join(f"{k}: {v:.1f}" for k, v in limit["images_per_second_by_batch"].items())
    cold = result["cold_start"]
    version = result.get("version_shown", f"`{result['version_dir']}`")
    lines = [
        f"### {result['model']} ({version})",
        "",
        f"In-process limit: **{best:.1f} img/s** at batch {limit['best_batch_size']} "
        f"(img/s by batch size: {by_batch}); batch 1 takes **{limit['batch1_ms']:.1f} ms**.",
        "",
        _batch_choice_line(result["batch_choice"])
        + _revised_line(result["batch_choice"], result.get("batch_choice_after_levels")),
        "",
        "Service with dynamic batching (the last row: one client right after the busiest level):",
        "",
        *_levels_table(result["batching"], best, result["after_burst"]),
        *_peer_lines(result, best, skipped),
        "Service with batching off (`MAX_BATCH_SIZE=1`), the per-request baseline:",
        "",
        *_levels_table(result["per_request"], best),
        f"Cold start: ready {cold['ready_seconds']} s after the process starts = imports and start-up "
        f"{cold['import_and_start_seconds']} s + model load {cold['load_seconds']} s + warm-up "
        f"{cold['warmup_seconds']} s (first calls {cold['first_calls_seconds']} s, the rest timing the batch "
        f"curve). Memory: RSS {result['rss_mib_after_warmup']} MiB after warm-up, "
        f"{result['rss_mib_after_requests']} MiB after {result['requests_before_rss']} requests, then after "
        f"each peak of {result['batching'][-1]['clients']} clients: "
        f"{', '.join(str(rss) for rss in result['rss_mib_after_peaks'])} MiB.",
        "",
        *_protocol_rows(result["protocols"]),
        *_tax_lines(result),
        *_curve_lines(result["curves"], images),
        _djpeg_line(result["decode_against_djpeg"]),
        "",
        "| target | measured | met |",
        "| --- | ---: | :---: |",
        *[
            f"| {t['name']} | {shown(t['measured'], 3)} | {'yes' if t['met'] else '**no**'} |"
            for t in result["targets"]
        ],
        "",
        f"![throughput and p99 against concurrency, files per request and image size]({figure})",
        "",
    ]
    return "\n".join(lines)


def draw(result: dict, images: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    series = [
        ("service, dynamic batching", result["batching"]),
        ("service, batching off", result["per_request"]),
    ]
    series += [(PEER_TITLES[peer["name"]], peer["levels"]) for peer in result["peers"]]
    for label, levels in series:
        clients = [lv["clients"] for lv in levels]
        axes[0][0].plot(clients, [lv["images_per_second"] for lv in levels], marker="o", label=label)
        axes[1][0].plot(clients, [lv["p99_ms"] for lv in levels], marker="o", label=label)
    axes[0][0].axhline(
        result["in_process"]["best_images_per_second"], color="gray", linestyle="--", label="in-process best"
    )
    files = result["curves"]["files"]
    counts = [point["images_per_request"] for point in files]
    ticks = ([lv["clients"] for lv in result["batching"]], counts)
    axes[0][1].plot(counts, [point["images_per_second"] for point in files], marker="o")
    axes[1][1].plot(counts, [point["p99_ms"] for point in files], marker="o")
    sizes = result["curves"]["sizes"]
    names = [_image_name(point["image"], images).replace(", ", "\n", 1) for point in sizes]
    axes[0][2].bar(names, [point["images_per_second"] for point in sizes])
    axes[1][2].bar(names, [point["p99_ms"] for point in sizes])
    clients = result["curves"]["clients"]
    for column, xlabel in enumerate(
        ("concurrent clients", f"files per request ({clients} clients)", f"image ({clients} clients)")
    ):
        for row, title in enumerate(("throughput (img/s)", "p99 latency (ms)")):
            axis = axes[row][column]
            if column < 2:
                axis.set_xscale("log", base=2)
                axis.set_xticks(ticks[column], [str(tick) for tick in ticks[column]])
            if row == 0:
                axis.set_ylim(bottom=0)
            if row == 1 and column == 0:
                axis.set_yscale("log")
            axis.set_xlabel(xlabel)
            axis.set_title(title)
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{result['model']}: how throughput and the p99 grow")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: dict, out: Path) -> None:
    figures_dir = out.with_suffix("")
    figures_dir.mkdir(parents=True, exist_ok=True)
    (figures_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    sections = [
        START,
        f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"{'a GPU' if m['gpu'] else 'no GPU'}, Python {m['python']}, TensorFlow {m['tensorflow']}; "
        f"one {_image_name('small', results['images'])} per request unless said"
        + (f"; settings {results['settings']}" if results["settings"] else "")
        + (" (a --quick smoke run: not for quoting)" if results["quick"] else "")
        + ". Raw figures: "
        f"[{figures_dir.name}/results.json]({figures_dir.name}/results.json).",
        "",
    ]
    for result in results["models"]:
        figure = f"{figures_dir.name}/{result['model']}.png"
        draw(result, results["images"], out.parent / figure)
        sections.append(model_section(result, figure, results["images"], results["skipped_peers"]))
    sections.append(END)
    generated = "\n".join(sections)
    text = out.read_text() if out.exists() else f"# Performance\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    out.write_text(head + generated + tail)
