"""Idefics3-8B-Llama3 on vLLM through MississippiVLM.connect: every task, the model's prompt.

    bash examples/vllm/serve_idefics3.sh            # on the GPU machine
    python examples/vllm/idefics3.py page.png --url http://127.0.0.1:8000

The served model's name tells the family (idefics3), so tasks are asked the way the model card
asks (an image part, then the question; vLLM renders the checkpoint's chat template,
``User:<image>question<end_of_utterance>\\nAssistant:``) and JSON extraction is constrained by
vLLM's structured outputs. ``longest_edge`` (a multiple of 364) goes to vLLM's Idefics3 processor
as ``mm_processor_kwargs={"size": {"longest_edge": N}}``.

Tested against a scripted stand-in of vLLM (tests/models/idefics3/test_remote.py); vLLM itself
needs a GPU, which the project's machines do not have.
"""

from __future__ import annotations

import argparse
import os

from mississippi_tools import MississippiVLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--longest-edge", type=int, default=1092, help="a multiple of 364")
    args = parser.parse_args()

    vlm = MississippiVLM.connect(
        args.url,
        api_key=os.environ.get("VLLM_API_KEY"),
        model="HuggingFaceM4/Idefics3-8B-Llama3",
    )
    options = {"longest_edge": args.longest_edge}
    print("tasks:", [task.name for task in vlm.tasks])
    print("OCR:", vlm.ocr(args.image, options=options).text[:500])
    print("Answer:", vlm.ask(args.image, "What is this document about?", options=options))
    fields = vlm.extract(args.image, {"title": "", "date": "", "total": 0.0}, options=options)
    print("Fields:", fields)


if __name__ == "__main__":
    main()
