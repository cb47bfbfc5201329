"""Measuring in fresh Python processes, optionally with the CPU kernels capped at AVX2.

A benchmark's parent process starts one worker per measurement (``python -m <module> --worker
<json spec>``): each worker's peak RSS and first-load costs are its own, and environment
variables that PyTorch, oneDNN and FBGEMM read once, at import, take effect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Environment that caps PyTorch's, oneDNN's and FBGEMM's kernels at an instruction set.
ISA_CAPS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    },
}


def in_process(
    module: str, task: str, *, isa: str = "native", timeout: float = 3600, **kwargs: Any
) -> dict[str, Any]:
    """Run ``module``'s worker for ``task`` in a fresh process capped at ``isa``; its JSON result.

    ``kwargs`` go into the worker's spec (paths as strings); the worker prints its result as
    the last line of its output.
    """
    env = {
        **os.environ,
        **ISA_CAPS[isa],
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    spec = json.dumps(
        {"task": task, **{k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}}
    )
    done = subprocess.run(
        [sys.executable, "-m", module, "--worker", spec],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {module} {task} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
