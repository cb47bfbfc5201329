"""Every task of mississippi-tools against a vLLM server (or `mississippi-tools serve`).

    bash examples/vllm/serve_one_gpu.sh              # prints the API key
    export VLLM_API_KEY=...                          # the same key
    python examples/vllm/tasks.py page.png --url http://127.0.0.1:8000

The remote engine asks GET /v1/models what the server is: for vLLM (owned_by "vllm") it sends
response_format json_schema (grammar-constrained JSON) and mm_processor_kwargs (max_dynamic_patch,
use_msac) with each request.
"""

from __future__ import annotations

import argparse
import os

from mississippi_tools import MississippiVLM
from mississippi_tools.errors import ExtractionError


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", help="an image or a PDF (with --page)")
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the server (vLLM: port 8000)"
    )
    parser.add_argument("--page", type=int, default=None, help="page of a PDF")
    parser.add_argument(
        "--max-tiles", type=int, default=None, help="tiles per image (model default 6)"
    )
    options = parser.parse_args()

    with MississippiVLM.connect(
        options.url, api_key=os.environ.get("VLLM_API_KEY"), timeout=600
    ) as vlm:
        engine = vlm.engine
        info = engine.server_info()  # type: ignore[attr-defined]
        print(f"server: {info.kind}, model {info.model}, grammar: {engine.supports_grammar}")
        common = {"page": options.page, "max_tiles": options.max_tiles}

        ocr = vlm.ocr(options.image, format="markdown", **common)
        print("\n== OCR (markdown)\n" + ocr.text)
        print(
            f"   {ocr.meta.prompt_tokens} prompt tokens, {ocr.meta.new_tokens} new, "
            f"{ocr.meta.timings}"
        )

        try:
            fields = vlm.extract_result(
                options.image,
                {"document_type": "", "date": "", "total_amount": 0.0, "issuer": ""},
                confidence=True,
                **common,
            )
        except ExtractionError as e:  # e.g. cut by max_new_tokens; the raw answer is kept
            print(f"\n== JSON extraction failed: {e}\n   raw: {e.raw_text[:200]!r}")
        else:
            print("\n== JSON extraction\n", fields.data, f"(attempts: {fields.meta.attempts})")
            print("   confidence:", fields.confidence)

        for title, task in (("Table", vlm.read_table), ("Chart", vlm.read_chart)):
            try:
                print(f"\n== {title}\n" + task(options.image, **common).to_markdown())
            except ExtractionError as e:  # the page holds no table (or chart)
                print(f"\n== {title}: none found ({e.raw_text[:80]!r})")

        answer = vlm.ask(options.image, "What is this document about, in one sentence?", **common)
        print("\n== Question\n" + answer.text)


if __name__ == "__main__":
    main()
