"""Read many pages concurrently through vLLM: requests in flight keep every replica busy.

    python examples/vllm/batch_ocr.py scans/*.png report.pdf --url http://gpu:8000 --concurrency 32

With --data-parallel-size N, raise --concurrency to about N x the batch each replica runs well
(32-64 for the 800M model per GPU). Results print in input order; a page that fails prints its
error and the run goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from mississippi_tools import MississippiVLM


async def main(options: argparse.Namespace) -> None:
    vlm = MississippiVLM.connect(
        options.url, api_key=os.environ.get("VLLM_API_KEY"), timeout=600, max_retries=5
    )
    try:
        started = time.perf_counter()
        results = await vlm.aocr_batch(
            options.inputs,
            pages=options.pages,
            concurrency=options.concurrency,
            return_exceptions=True,
            max_new_tokens=options.max_new_tokens,
        )
        elapsed = time.perf_counter() - started
        for result in results:
            if isinstance(result, BaseException):
                print(f"!! {type(result).__name__}: {result}")
                continue
            where = result.meta.source + (f" p.{result.meta.page}" if result.meta.page else "")
            print(f"== {where} ({result.meta.new_tokens} tokens)\n{result.text}\n")
        print(f"{len(results)} pages in {elapsed:.1f} s ({len(results) / elapsed:.2f} pages/s)")
    finally:
        vlm.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="images, PDFs, multi-page TIFFs")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--pages", default=None, help='pages of documents, e.g. "1-3"')
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    asyncio.run(main(parser.parse_args()))
