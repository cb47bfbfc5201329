"""Write a run's results: JSON, a markdown summary, a PNG plot, and a short table on stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The issue's targets on a 2-core CPU (800M shape).
TARGETS = {
    "decode_bf16_fraction_of_bandwidth": 0.60,
    "vision_fraction_of_matmul": 0.50,
    "prefill_fraction_of_matmul": 0.50,
    "concurrent8_over_sequential": 3.0,
    "cache_second_over_first": 0.30,
    "constraint_overhead": 0.05,
    "cli_help_seconds": 0.30,
}


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met."""
    rows: list[dict[str, Any]] = []
    runs = results.get("runs", {})

    def add(name: str, value: float | None, better: str, note: str = "") -> None:
        goal = TARGETS[name]
        met = None if value is None else (value >= goal if better == "higher" else value <= goal)
        rows.append({"target": name, "goal": goal, "value": value, "met": met, "note": note})

    bf16 = runs.get("bfloat16", {}).get("stages", {})
    add(
        "decode_bf16_fraction_of_bandwidth",
        min((s["against_limits"]["decode"] for s in bf16.values()), default=None),
        "higher",
    )
    main = runs.get(results.get("main_dtype", "float32"), {})
    main_stages = main.get("stages", {})
    add(
        "vision_fraction_of_matmul",
        min((s["against_limits"]["vision"] for s in main_stages.values()), default=None),
        "higher",
        f"dtype {results.get('main_dtype')}",
    )
    add(
        "prefill_fraction_of_matmul",
        min((s["against_limits"]["prefill"] for s in main_stages.values()), default=None),
        "higher",
        f"dtype {results.get('main_dtype')}",
    )
    levels = {t["concurrency"]: t for t in main.get("throughput", [])}
    ratio = (
        levels[8]["requests_per_s"] / levels[1]["requests_per_s"]
        if 1 in levels and 8 in levels
        else None
    )
    long_levels = {t["concurrency"]: t for t in main.get("throughput_long", [])}
    note = ""
    if 1 in long_levels and 8 in long_levels:
        long_ratio = long_levels[8]["requests_per_s"] / long_levels[1]["requests_per_s"]
        note = f"{long_ratio:.2f}x with {results.get('long_tokens')}-token answers"
    add("concurrent8_over_sequential", ratio, "higher", note)
    cache = main.get("cache")
    add("cache_second_over_first", cache["second_over_first"] if cache else None, "lower")
    constraint = main.get("constraint")
    add("constraint_overhead", constraint["overhead"] if constraint else None, "lower")
    startup = results.get("startup", {})
    add("cli_help_seconds", startup.get("cli_help_seconds"), "lower")
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The summary table a person reads."""
    lines = [f"# Benchmark: {results['name']}", ""]
    lines.append(f"Command: `{results['command']}`  ")
    lines.append(f"Machine: {results['machine']}  ")
    lines.append(
        f"Checkpoint: {results['checkpoint']} (random weights), {results['new_tokens']} new tokens per request"
    )
    limits = results["limits"]
    lines += [
        "",
        "## Machine limits",
        "",
        "| limit | value |",
        "|---|---|",
        f"| memory read bandwidth | {_fmt(limits['memory_read_gbps'], 1)} GB/s |",
    ]
    for dtype, value in limits["matmul_gflops"].items():
        lines.append(f"| matmul {dtype} | {_fmt(value, 1)} GFLOP/s |")
    for dtype, value in limits["gemv_weight_gbps"].items():
        lines.append(f"| matrix-vector {dtype} (weights) | {_fmt(value, 1)} GB/s |")
    lines += [
        "",
        "## One request, stage by stage",
        "",
        "| page | dtype | tiles | prompt tokens | decode+tiling s | vision s | projector s | prefill s "
        "| decode tok/s | parse ms | vision % of matmul | prefill % of matmul | decode % of bandwidth |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dtype, run in results["runs"].items():
        for page, stage in run.get("stages", {}).items():
            s, a = stage["seconds"], stage["against_limits"]
            lines.append(
                f"| {page} | {dtype} | {stage['tiles']} | {stage['prompt_tokens']} | {_fmt(s['decode_and_tiling'])} "
                f"| {_fmt(s['vision'])} | {_fmt(s['projector'], 3)} | {_fmt(s['prefill'])} "
                f"| {_fmt(stage['decode_tokens_per_s'])} | {_fmt(s['parse'] * 1e3)} | {a['vision']:.0%} "
                f"| {a['prefill']:.0%} | {a['decode']:.0%} |"
            )
    lines += [
        "",
        "Peak RSS: "
        + ", ".join(
            f"{dtype} {_fmt(run['peak_rss_gib'])} GiB" for dtype, run in results["runs"].items()
        ),
    ]
    main = results["runs"].get(results["main_dtype"], {})
    if "plain" in main:
        lines += [
            "",
            f"## Against the plain path ({results['main_dtype']})",
            "",
            "| measure | plain path | ours | our speed-up |",
            "|---|---|---|---|",
        ]
        for page, seconds in main["plain"].items():
            ours = sum(main["stages"][page]["seconds"].values())
            lines.append(
                f"| one {page} request (s) | {_fmt(seconds)} | {_fmt(ours)} | {_fmt(seconds / ours)}x |"
            )
        plain = main["plain_sequential"]
        for level in main["throughput"]:
            lines.append(
                f"| 8 requests, {level['concurrency']} in flight (req/s) | {_fmt(plain['requests_per_s'], 3)} "
                f"| {_fmt(level['requests_per_s'], 3)} | {_fmt(level['requests_per_s'] / plain['requests_per_s'])}x |"
            )
    if main.get("throughput_long"):
        long_levels = {t["concurrency"]: t for t in main["throughput_long"]}
        tokens = results.get("long_tokens")
        lines += [
            "",
            f"Long answers ({tokens} new tokens per request, 8 requests): "
            + ", ".join(
                f"{level} in flight {_fmt(t['requests_per_s'], 3)} req/s"
                for level, t in sorted(long_levels.items())
            )
            + (
                f"; 8 in flight / 1 = {_fmt(long_levels[8]['requests_per_s'] / long_levels[1]['requests_per_s'])}x."
                if 1 in long_levels and 8 in long_levels
                else "."
            ),
        ]
    if "cache" in main:
        cache = main["cache"]
        lines += [
            "",
            "## Feature cache (6-tile page)",
            "",
            f"First question {_fmt(cache['first_seconds'])} s, second {_fmt(cache['second_seconds'])} s "
            f"({cache['second_over_first']:.0%} of the first).",
        ]
    if "constraint" in main:
        c = main["constraint"]
        lines += [
            "",
            "## JSON grammar overhead",
            "",
            f"{_fmt(c['free_ms_per_token'])} ms/token free, {_fmt(c['constrained_ms_per_token'])} ms/token "
            f"constrained ({c['overhead']:+.1%} per token over {c['constrained_tokens']} tokens).",
        ]
    startup = results.get("startup")
    if startup:
        lines += [
            "",
            "## Start-up",
            "",
            "| measure | seconds |",
            "|---|---|",
            f"| python -c pass | {_fmt(startup['python_seconds'], 3)} |",
            f"| mississippi-tools --help | {_fmt(startup['cli_help_seconds'], 3)} |",
            f"| import mississippi_tools (torch blocked) | {_fmt(startup['import_without_torch_seconds'], 3)} |",
        ]
        for name in ("serve", "mcp"):
            for key, value in (startup.get(name) or {}).items():
                lines.append(
                    f"| {name} {key.replace('_', ' ')} | {_fmt(value, 3) if not isinstance(value, str) else value} |"
                )
    if results.get("service"):
        lines += ["", "## Service", "", "```json", json.dumps(results["service"], indent=2), "```"]
    lines += [
        "",
        "## Targets",
        "",
        "| target | goal | measured | met | note |",
        "|---|---|---|---|---|",
    ]
    for row in targets(results):
        met = "n/a" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(
            f"| {row['target']} | {row['goal']} | {_fmt(row['value'], 3) if row['value'] is not None else 'n/a'} | {met} | {row['note']} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Stage seconds per page and dtype (stacked), and each stage against its limit."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), dpi=100)
    left, right = figure.subplots(1, 2)
    labels, bottoms = [], []
    stage_names = ["decode_and_tiling", "vision", "projector", "prefill", "decode", "parse"]
    rows = [
        (f"{page}\n{dtype}", stage)
        for dtype, run in results["runs"].items()
        for page, stage in run.get("stages", {}).items()
    ]
    for name in stage_names:
        values = [stage["seconds"][name] for _, stage in rows]
        if not bottoms:
            bottoms = [0.0] * len(values)
        left.bar(range(len(values)), values, bottom=bottoms, label=name)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    labels = [label for label, _ in rows]
    left.set_xticks(range(len(labels)), labels)
    left.set_ylabel("seconds per request")
    left.set_title("Where one request's time goes")
    left.legend(fontsize=8)
    metrics = ["vision", "prefill", "decode"]
    width = 0.8 / max(1, len(rows))
    for i, (label, stage) in enumerate(rows):
        values = [stage["against_limits"][m] * 100 for m in metrics]
        right.bar(
            [j + i * width for j in range(len(metrics))],
            values,
            width,
            label=label.replace("\n", " "),
        )
    right.axhline(50, color="gray", linestyle="--", linewidth=1)
    right.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics)
    right.set_ylabel("% of the machine's limit")
    right.set_title("Stages against matmul throughput / bandwidth")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def write(results: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    name = results["name"]
    results = {**results, "targets": targets(results)}
    paths = {
        "json": directory / f"{name}.json",
        "md": directory / f"{name}.md",
        "png": directory / f"{name}.png",
    }
    paths["json"].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(results), encoding="utf-8")
    plot(results, paths["png"])
    return paths
