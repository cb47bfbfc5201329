"""The LangChain examples run to completion (tiny random model, scripted chat model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]
EXAMPLES = ("langchain_agent.py", "langchain_rag.py")
TIMEOUT = 300


def test_examples_run() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters")]),
        "HF_HUB_OFFLINE": "1",
    }
    # Both at once: each spends most of its time importing and building its tiny checkpoint.
    processes = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for name in EXAMPLES
    }
    outputs = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            outputs[name] = stdout
            assert process.returncode == 0, f"{name} failed:\n{stdout}\n{stderr}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    agent = outputs["langchain_agent.py"]
    assert "RANDOM weights" in agent
    assert "tool mississippi_ocr [success] artifact=OCRResult" in agent
    assert "tool mississippi_extract [success] artifact=ExtractionResult" in agent
    assert "tool mississippi_ocr [error] artifact=None" in agent
    assert "access_denied: path " in agent

    rag = outputs["langchain_rag.py"]
    assert "RANDOM weights" in rag
    assert "loaded 5 pages" in rag
    assert "query: coffee receipt\n  0." in rag
    assert rag.split("query: coffee receipt\n", 1)[1].split("\n")[0].split()[1] == "receipt.png"
