"""Retrieval over scanned documents: load a folder with MississippiImageLoader, index, query.

Run from a source tree (the package is installed as usual with
``pip install "mississippi-tools[langchain,local,pdf]"``)::

    PYTHONPATH=.:adapters python examples/langchain_rag.py
    PYTHONPATH=.:adapters python examples/langchain_rag.py --model DIR --folder scans/ \\
        --query "total due" --query "delivery address"

Without ``--folder`` it draws a few sample documents (three images and a two-page PDF). Without
``--model`` it builds a tiny checkpoint with *random weights* in a temporary directory, so that it
runs anywhere in seconds with no download: loading, indexing and retrieval are real, but a
random model writes random words, so only the file names (indexed with each page) make the
matches meaningful. With a real model the page text does.

The embeddings are a small hashing bag-of-words written below: local, deterministic and
dependency-free, good enough for keyword-like retrieval. Swap in any LangChain ``Embeddings``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from PIL import Image, ImageDraw

from langchain_mississippi import MississippiImageLoader
from mississippi_tools import MississippiVLM

SAMPLES = {
    "invoice.png": "INVOICE 2024-117\nACME Tools Ltd.\nTotal due: $1,200.00",
    "receipt.png": "CORNER CAFE\n2 x espresso  $6.00\nThank you!",
    "memo.png": "MEMO\nTo: all staff\nThe office is closed on Friday.",
}
REPORT_PAGES = ["Quarterly report\nRevenue grew 12%", "Outlook\nNew warehouse in Lyon"]
DEFAULT_QUERIES = ["invoice total due", "coffee receipt", "quarterly report outlook"]


class HashingEmbeddings(Embeddings):
    """Bag of words hashed into ``dimensions`` buckets, L2-normalised (a local, fixed embedding).

    Words are lower-cased runs of two or more letters (numbers are left out: keyword-like
    retrieval); each adds 1 to the bucket its blake2b hash selects, with a sign from the hash, so
    that collisions tend to cancel rather than add up.
    """

    def __init__(self, dimensions: int = 1024) -> None:
        self.dimensions = dimensions

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in re.findall(r"[^\W\d_]{2,}", text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimensions
            vector[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


def draw_page(text: str) -> Image.Image:
    image = Image.new("RGB", (640, 400), "white")
    ImageDraw.Draw(image).text((40, 40), text, fill="black")
    return image


def make_samples(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in SAMPLES.items():
        draw_page(text).save(folder / name)
    first, *rest = [draw_page(text) for text in REPORT_PAGES]
    first.save(folder / "quarterly-report.pdf", save_all=True, append_images=rest)
    return folder


def load_model(model: str | None, workdir: Path) -> tuple[MississippiVLM, dict[str, Any]]:
    if model is not None:
        return MississippiVLM.load(model), {}
    from mississippi_tools.testing import build_tiny_checkpoint

    print(
        "No --model given: building a tiny checkpoint with RANDOM weights. Loading, indexing "
        "and retrieval are real, but a random model writes random words.\n"
        "Pass --model DIR (e.g. a download of h2oai/h2ovl-mississippi-800m) for real text.\n"
    )
    checkpoint = build_tiny_checkpoint(workdir / "tiny-h2ovl")
    vlm = MississippiVLM.load(checkpoint, device="cpu", dtype="float32", progress=False)
    return vlm, {"max_tiles": 1, "max_new_tokens": 24}


def indexed_text(document: Document) -> str:
    """The text to embed: the file name and page first, so that names are searchable too."""
    name = Path(document.metadata["source"]).stem.replace("-", " ")
    return f"{name} page {document.metadata['page']}\n{document.page_content}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint directory or hub id (default: tiny random)")
    parser.add_argument("--folder", type=Path, help="images and PDFs to index (default: samples)")
    parser.add_argument("--mode", choices=["ocr", "markdown"], default="ocr")
    parser.add_argument("--query", action="append", help="a query (repeatable)")
    parser.add_argument("-k", type=int, default=2, help="results per query")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mississippi-rag-") as tmp:
        workdir = Path(tmp)
        folder = args.folder or make_samples(workdir / "documents")
        vlm, budget = load_model(args.model, workdir)
        with vlm:
            loader = MississippiImageLoader(
                folder, vlm=vlm, mode=args.mode, recursive=True, on_error="continue",
                progress=True, **budget,
            )  # fmt: skip
            documents = loader.load()
        failed = [d for d in documents if "error" in d.metadata]
        for document in failed:
            print(f"could not read {document.metadata['source']}: {document.metadata['error']}")
        pages = [d for d in documents if "error" not in d.metadata]
        print(f"loaded {len(pages)} pages from {folder} ({len(failed)} failed)")

        store = InMemoryVectorStore(HashingEmbeddings())
        store.add_texts(
            [indexed_text(d) for d in pages], metadatas=[dict(d.metadata) for d in pages]
        )
        for query in args.query or DEFAULT_QUERIES:
            print(f"\nquery: {query}")
            for found, score in store.similarity_search_with_score(query, k=args.k):
                where = f"{Path(found.metadata['source']).name} p.{found.metadata['page']}"
                preview = found.page_content.split("\n", 1)[-1].replace("\n", " ")[:70]
                print(f"  {score:.2f}  {where:<28} {preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
