"""RAG over scans and PDFs with LlamaIndex: read a folder with the Mississippi reader, index, query.

Run from a source tree (the package is installed as usual with
``pip install "mississippi-tools[llamaindex,local,pdf]"``)::

    PYTHONPATH=.:adapters python examples/llamaindex_rag.py
    PYTHONPATH=.:adapters python examples/llamaindex_rag.py --model ~/models/h2ovl-800m \
        --folder ~/scans --query "total due on the ACME invoice"

Without ``--model`` it builds a tiny checkpoint with *random weights* in a temporary directory,
so that it runs anywhere in seconds with no download: the reader, the engine and the index are
real, but a random model writes random words. Without ``--folder`` it writes a sample folder: two
images, a two-page PDF, a corrupt PNG (recorded as a failure, not skipped) and a text file, which
SimpleDirectoryReader reads with its own reader.

The embedding is a small hashing bag-of-words (``HashingEmbedding`` below) so that nothing is
downloaded; use a real one in practice, e.g. ``HuggingFaceEmbedding`` from
``llama-index-embeddings-huggingface``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from PIL import Image, ImageDraw

from llama_index.readers.mississippi import MississippiImageReader
from mississippi_tools import MississippiVLM

_WORD = re.compile(r"\w+")


class HashingEmbedding(BaseEmbedding):
    """Hashed word counts, L2-normalised: texts sharing words get close vectors. Offline."""

    dim: int = 512

    @classmethod
    def class_name(cls) -> str:
        return "HashingEmbedding"

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest, "little") % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)


def page(text: str, size: tuple[int, int] = (640, 400)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((40, 40), text, fill="black")
    return image


def make_sample_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    page("INVOICE 2024-117\nACME Tools Ltd.\n\nTotal due: $1,200.00").save(folder / "invoice.png")
    page("Receipt\nHarbour Cafe\n2 x coffee  $7.00", (480, 320)).save(folder / "receipt.jpg")
    first, second = page("Annual report\n\n1. Summary"), page("2. Revenue by quarter")
    first.save(folder / "report.pdf", save_all=True, append_images=[second])  # a 2-page PDF
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # truncated
    (folder / "notes.txt").write_text(
        "Meeting notes: the lighthouse repairs are approved; the ACME invoice is due in May."
    )
    return folder


def load_model(model: str | None, workdir: Path) -> tuple[MississippiVLM, dict[str, Any]]:
    if model is not None:
        return MississippiVLM.load(model), {}
    from mississippi_tools.testing import build_tiny_checkpoint

    print(
        "No --model given: building a tiny checkpoint with RANDOM weights. The reader and the "
        "index are real, but a random model writes random words.\n"
        "Pass --model DIR (e.g. a download of h2oai/h2ovl-mississippi-800m) for real text.\n"
    )
    checkpoint = build_tiny_checkpoint(workdir / "tiny-h2ovl")
    vlm = MississippiVLM.load(checkpoint, device="cpu", dtype="float32", progress=False)
    return vlm, {"max_tiles": 1, "max_new_tokens": 16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory or hub id (default: tiny random)")
    parser.add_argument("--folder", type=Path, help="folder of images and PDFs (default: sample)")
    parser.add_argument("--query", default="lighthouse repairs", help="what to look for")
    parser.add_argument("--mode", default="markdown", choices=["ocr", "markdown"])
    parser.add_argument("--max-new-tokens", type=int, help="most tokens per page")
    parser.add_argument("--max-tiles", type=int, help="most 448-px tiles per page")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        vlm, options = load_model(args.model, workdir)
        if args.max_new_tokens is not None:
            options["max_new_tokens"] = args.max_new_tokens
        if args.max_tiles is not None:
            options["max_tiles"] = args.max_tiles
        folder = args.folder or make_sample_folder(workdir / "sample")

        with vlm:
            # on_error="record": a file that cannot be read becomes a Document with its error;
            # with "raise", SimpleDirectoryReader would print a line and skip the file.
            reader = MississippiImageReader(vlm, mode=args.mode, on_error="record", **options)
            documents = SimpleDirectoryReader(
                folder, file_extractor=reader.file_extractor()
            ).load_data()

        print(f"Read {len(documents)} documents from {folder}:")
        for doc in documents:
            meta = doc.metadata
            where = f"{meta['file_name']} page {meta.get('page_label') or '-'}"
            if meta.get("error_code"):
                print(f"  {where}: FAILED ({meta['error_code']}): {meta['error_message']}")
            else:
                print(f"  {where}: {len(doc.text)} characters")

        index = VectorStoreIndex.from_documents(documents, embed_model=HashingEmbedding())
        hits = index.as_retriever(similarity_top_k=args.top_k).retrieve(args.query)
        print(f"\nTop {len(hits)} for {args.query!r}:")
        for hit in hits:
            meta = hit.node.metadata
            snippet = " ".join(hit.node.get_content().split())[:80]
            print(f"  {hit.score:.3f}  {meta['file_name']} page {meta.get('page_label') or '-'}")
            print(f"         {snippet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
