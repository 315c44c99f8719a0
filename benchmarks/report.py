"""Targets as ratios to the in-process limit, and the report: JSON, a Markdown table and a PNG."""

import json
from pathlib import Path

START, END = "<!-- benchmark results: start -->", "<!-- benchmark results: end -->"


def evaluate_targets(result: dict) -> list[dict]:
    limit = result["in_process"]
    first, busiest = result["batching"][0], result["batching"][-1]

    def target(name: str, ratio: float, bound: float, at_least: bool) -> dict:
        met = ratio >= bound if at_least else ratio <= bound
        return {"name": name, "measured": round(ratio, 3), "bound": bound, "met": met}

    return [
        target(
            f"{busiest['clients']} clients: throughput / in-process best batch >= 0.97",
            busiest["images_per_second"] / limit["best_images_per_second"],
            0.97,
            True,
        ),
        target(
            f"{first['clients']} client: p50 / in-process batch-1 time <= 1.05",
            first["p50_ms"] / limit["batch1_ms"],
            1.05,
            False,
        ),
        target(
            f"{busiest['clients']} clients: p99 / p50 <= 1.25",
            busiest["p99_ms"] / busiest["p50_ms"],
            1.25,
            False,
        ),
        target(
            "1 client after the burst: p50 / first 1-client p50 <= 1.2",
            result["after_burst"]["p50_ms"] / first["p50_ms"],
            1.2,
            False,
        ),
        target(
            "RSS after requests / RSS after warm-up <= 1.05",
            result["rss_mib_after_requests"] / result["rss_mib_after_warmup"],
            1.05,
            False,
        ),
    ]


def _level_rows(levels: list[dict], best: float) -> list[str]:
    return [
        f"| {lv['clients']} | {lv['images_per_second']:.1f} | {lv['images_per_second'] / best:.2f} | "
        f"{lv['p50_ms']:.1f} | {lv['p90_ms']:.1f} | {lv['p99_ms']:.1f} | {lv['p99_ms'] / lv['p50_ms']:.2f} | "
        f"{lv['errors']} | {lv['client_cpu_share']:.1%} |"
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
            f"{lv['throughput_ratio']:.2f} | {lv['p50_ms']:.1f} | {lv['p50_ratio']:.2f} | "
            f"{lv['p99_ms']:.1f} | {lv['errors']} |"
            for lv in levels
        ],
        "",
    ]


def model_section(result: dict, figure: str) -> str:
    limit = result["in_process"]
    best = limit["best_images_per_second"]
    header = (
        "| clients | img/s | / in-process best | p50 ms | p90 ms | p99 ms | p99/p50 | errors | client CPU |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    by_batch = ", ".join(f"{k}: {v:.1f}" for k, v in limit["images_per_second_by_batch"].items())
    cold = result["cold_start"]
    lines = [
        f"### {result['model']} (`{result['version_dir']}`)",
        "",
        f"In-process limit: **{best:.1f} img/s** at batch {limit['best_batch_size']} "
        f"(img/s by batch size: {by_batch}); batch 1 takes **{limit['batch1_ms']:.1f} ms**.",
        "",
        "Service with dynamic batching:",
        "",
        header,
        *_level_rows(result["batching"], best),
        *_level_rows([result["after_burst"]], best)[:1],
        "",
        "(the last row is one client right after the busiest level)",
        "",
        "Service with batching off (`MAX_BATCH_SIZE=1`), the per-request baseline:",
        "",
        header,
        *_level_rows(result["per_request"], best),
        "",
        f"Cold start: ready {cold['ready_seconds']} s after the process starts = imports and start-up "
        f"{cold['import_and_start_seconds']} s + model load {cold['load_seconds']} s + warm-up "
        f"{cold['warmup_seconds']} s. Memory: RSS {result['rss_mib_after_warmup']} MiB after warm-up, "
        f"{result['rss_mib_after_requests']} MiB after {result['requests_before_rss']} requests.",
        "",
        *_protocol_rows(result["protocols"]),
        "| target | measured | met |",
        "| --- | ---: | :---: |",
        *[
            f"| {t['name']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
            for t in result["targets"]
        ],
        "",
        f"![throughput and p99 against concurrency]({figure})",
        "",
    ]
    return "\n".join(lines)


def draw(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("batching", "dynamic batching"), ("per_request", "batching off")):
        clients = [lv["clients"] for lv in result[key]]
        left.plot(clients, [lv["images_per_second"] for lv in result[key]], marker="o", label=label)
        right.plot(clients, [lv["p99_ms"] for lv in result[key]], marker="o", label=label)
    left.axhline(
        result["in_process"]["best_images_per_second"], color="gray", linestyle="--", label="in-process best"
    )
    for axis, title in ((left, "throughput (img/s)"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_title(title)
        axis.legend()
        axis.grid(alpha=0.3)
    fig.suptitle(f"{result['model']}: one JPEG per request")
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
        f"one {results['request_image_bytes'] // 1024} KiB JPEG per request"
        + (f"; settings {results['settings']}" if results["settings"] else "")
        + (" (a --quick smoke run: not for quoting)" if results["quick"] else "")
        + ". Raw figures: "
        f"[{figures_dir.name}/results.json]({figures_dir.name}/results.json).",
        "",
    ]
    for result in results["models"]:
        figure = f"{figures_dir.name}/{result['model']}.png"
        draw(result, out.parent / figure)
        sections.append(model_section(result, figure))
    sections.append(END)
    generated = "\n".join(sections)
    text = out.read_text() if out.exists() else f"# Performance\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    out.write_text(head + generated + tail)
