"""examples/llamaindex_rag.py and examples/llamaindex_agent.py run, as scripts, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
EXAMPLES = ROOT / "examples"
TIMEOUT = 300


def start(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters")])}
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def finish(process: subprocess.Popen[str]) -> str:
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, f"exit {process.returncode}\n{out}\n{err}"
    return out


def test_both_examples_run_on_a_given_model(tiny_checkpoint: Path) -> None:
    model = ["--model", str(tiny_checkpoint), "--max-tiles", "1"]
    rag = start("llamaindex_rag.py", *model, "--max-new-tokens", "8")
    agent = start("llamaindex_agent.py", *model, "--max-new-tokens", "48")

    rag_out, agent_out = finish(rag), finish(agent)

    assert "Read 6 documents" in rag_out
    assert "broken.png page -: FAILED (image_decode_error)" in rag_out
    assert "report.pdf page 2:" in rag_out
    assert rag_out.split("Top 3 for 'lighthouse repairs':")[1].split()[1] == "notes.txt"

    assert "ocr({'image': 'invoice.png'}) -> ok" in agent_out
    assert "-> ERROR: path" in agent_out
    assert "outside the allowed roots" in agent_out
    assert "Answer: I read the invoice" in agent_out


@pytest.mark.slow
def test_both_examples_build_a_random_model_when_none_is_given() -> None:
    rag, agent = start("llamaindex_rag.py"), start("llamaindex_agent.py")

    for out in (finish(rag), finish(agent)):
        assert "RANDOM weights" in out
