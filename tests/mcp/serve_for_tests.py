"""Start ``mississippi-mcp`` with test hooks, for the tests that spawn the server (stdio, HTTP).

The hooks patch the core before :func:`mississippi_mcp.main` runs; the server's own code has no
test switches. They are driven by environment variables set by the tests only:

- ``MISSISSIPPI_TEST_LOAD_GATE=<path>``: the model loads (torch import and weights, in the
  server's background thread as always), then the load waits until that file exists before it
  returns, so the tests speak to a server whose model is certainly still loading (deterministic,
  no sleeps) without waiting longer than the real load takes.
- ``MISSISSIPPI_TEST_NOISE=1``: the loader writes to stdout the way libraries do (``print``, a
  tqdm bar, a raw ``write(1, ...)``); on stdio none of it may reach the protocol stream.
- ``MISSISSIPPI_TEST_CRASH_QUESTION=<text>``: ``ask`` with that question raises an
  unexpected ``RuntimeError`` inside the tool.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

NOISE = "noise-from-the-loader"


def _install_hooks() -> None:
    from mississippi_tools.vlm import MississippiVLM

    original_load = MississippiVLM.load.__func__  # type: ignore[attr-defined]
    gate = os.environ.get("MISSISSIPPI_TEST_LOAD_GATE")
    noisy = os.environ.get("MISSISSIPPI_TEST_NOISE") == "1"

    def load(cls: type[MississippiVLM], *args: Any, **kwargs: Any) -> MississippiVLM:
        if noisy:
            from tqdm import tqdm

            print(f"{NOISE} print")
            for _ in tqdm(range(3), file=sys.stdout, desc=NOISE):
                pass
            sys.stdout.flush()
            os.write(1, f"{NOISE} fd1\n".encode())
        vlm: MississippiVLM = original_load(cls, *args, **kwargs)
        if gate:  # the test opens it; give up (and fail the test) rather than hang for ever
            deadline = time.monotonic() + 120
            while not Path(gate).exists():
                if time.monotonic() > deadline:
                    raise SystemExit("test load gate never opened")
                time.sleep(0.05)
        return vlm

    MississippiVLM.load = classmethod(load)  # type: ignore[assignment, method-assign]

    crash_question = os.environ.get("MISSISSIPPI_TEST_CRASH_QUESTION")
    if crash_question:
        original_arun = MississippiVLM.arun

        async def arun(self: MississippiVLM, task: str, images: Any, **kwargs: Any) -> Any:
            if task == "ask" and kwargs.get("question") == crash_question:
                raise RuntimeError("injected crash with a secret detail")
            return await original_arun(self, task, images, **kwargs)

        MississippiVLM.arun = arun  # type: ignore[method-assign]


if __name__ == "__main__":
    _install_hooks()
    from mississippi_mcp import main

    sys.exit(main())
