"""``python -m benchmarks``: the whole performance suite, written to benchmarks/results/.

Measures, in one run: the machine's limits; one request stage by stage (1-tile and 6-tile pages,
float32 and bfloat16) against those limits; the plain path (same weights, transformers generate,
one request at a time); throughput at 1, 4 and 8 requests in flight; the feature cache; the JSON
grammar's overhead; peak RSS; and start-up times. Full-size configurations have random weights
(compute does not depend on the values) and a fixed number of new tokens.

Examples:
    python -m benchmarks                          # full suite, 800M shape (builds it once, ~1 min)
    python -m benchmarks --quick                  # tiny model, seconds: checks the suite runs
    python -m benchmarks --quick --out /tmp/smoke # ... and keeps its results there

A quick run prints its summary and writes no files unless --out is given (its numbers are not
results), and every temporary checkpoint is removed when the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import limits as machine
from benchmarks import report, startup

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"


@contextlib.contextmanager
def _tiny_checkpoint() -> Iterator[Path]:
    """A tiny checkpoint in a temporary directory, removed afterwards."""
    from mississippi_tools import testing

    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as directory:
        yield testing.build_tiny_checkpoint(Path(directory))


def _checkpoint(path: str | None, quick: bool, stack: contextlib.ExitStack) -> Path:
    from mississippi_tools import testing

    if path:
        return Path(path)
    if quick:
        return stack.enter_context(_tiny_checkpoint())
    target = CACHE / "h2ovl-800m-random"
    if not (target / "model.safetensors").is_file():
        print(
            f"building a full-size random-weight 800M checkpoint in {target} ...", file=sys.stderr
        )
        testing.build_checkpoint(target, testing.H2OVL_800M_CONFIG, dtype="bfloat16")
    return target


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({spec['dtype']}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _command(argv: list[str]) -> str:
    """The command line as run, with absolute paths shortened to ``.../<name>`` (results are
    committed; the machine's directories are not part of them)."""
    shown = [f".../{Path(a).name}" if os.path.isabs(a) else a for a in argv]
    return " ".join(["python -m benchmarks", *shown])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the suite; returns the results written to disk."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", help="checkpoint directory (default: a random 800M one)")
    parser.add_argument("--new-tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument(
        "--long-tokens",
        type=int,
        default=256,
        help="new tokens of the long-answer workload (0: skip)",
    )
    parser.add_argument("--dtypes", default="float32,bfloat16", help="dtypes to measure")
    parser.add_argument("--quick", action="store_true", help="tiny model, for a smoke test")
    parser.add_argument(
        "--name", default=None, help="results file name (default: cpu-800m / quick)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results directory (default: benchmarks/results; a --quick run writes none)",
    )
    parser.add_argument("--skip", default="", help="comma-separated: startup,service,engine")
    parser.add_argument(
        "--idefics",
        action="store_true",
        help="also run the Idefics2/Idefics3 stage (benchmarks/idefics.py; full width, minutes)",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        results = _run(args, stack, argv)
    out = args.out if args.out is not None or args.quick else RESULTS
    summary = report.markdown({**results, "targets": report.targets(results)})
    print(summary.split("## Targets")[-1])
    if out is None:
        print("a --quick run writes no results; pass --out DIR to keep them")
        return results
    paths = report.write(results, out)
    print(
        "written: "
        + ", ".join(
            str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in paths.values()
        )
    )
    return results


def _run(
    args: argparse.Namespace, stack: contextlib.ExitStack, argv: list[str] | None
) -> dict[str, Any]:
    """Measure everything the arguments ask for; temporary checkpoints go on ``stack``."""
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    checkpoint = _checkpoint(args.checkpoint, args.quick, stack)
    new_tokens = 4 if args.quick and args.new_tokens == 32 else args.new_tokens
    started = time.time()
    print("measuring the machine's limits ...", file=sys.stderr)
    limits = machine.machine_limits(quick=args.quick)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    main_dtype = "float32" if "float32" in dtypes else dtypes[0]
    runs: dict[str, Any] = {}
    for dtype in dtypes:
        print(f"measuring {dtype} ...", file=sys.stderr)
        spec = {
            "checkpoint": str(checkpoint),
            "dtype": dtype,
            "new_tokens": new_tokens,
            "limits": limits,
            "engine_sections": dtype == main_dtype and "engine" not in skip,
            "long_tokens": 0 if args.quick else args.long_tokens,
        }
        runs[dtype] = _worker(spec)
    results: dict[str, Any] = {
        "name": args.name or ("quick" if args.quick else "cpu-800m"),
        "command": _command(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, "
        f"torch {__import__('torch').__version__}",
        "checkpoint": str(checkpoint.name),
        "new_tokens": new_tokens,
        "long_tokens": 0 if args.quick else args.long_tokens,
        "limits": limits,
        "main_dtype": main_dtype,
        "runs": runs,
    }
    if "startup" not in skip:
        print("measuring start-up ...", file=sys.stderr)
        tiny = checkpoint if args.quick else stack.enter_context(_tiny_checkpoint())
        results["startup"] = startup.measure_startup(tiny)
    if "service" not in skip:
        try:
            from benchmarks.service import measure_service

            print("measuring the service ...", file=sys.stderr)
            results["service"] = measure_service(checkpoint, new_tokens=new_tokens)
        except Exception as e:
            results["service"] = {"error": f"{type(e).__name__}: {e}"}
    if args.idefics:
        from benchmarks import idefics

        print("measuring the Idefics stage ...", file=sys.stderr)
        results["idefics"] = idefics.run(quick=args.quick, out=args.out)
    results["wall_seconds"] = time.time() - started
    return results


if __name__ == "__main__":
    main()
