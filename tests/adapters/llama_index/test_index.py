"""A VectorStoreIndex over the reader's Documents, with a local embedding and no LLM."""

from __future__ import annotations

import re

from llama_index.core import Document, VectorStoreIndex

from .support import HashingEmbedding

WORD = re.compile(r"\w+")


def words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def test_index_built_from_reader_documents_retrieves_the_matching_one(
    sdr_documents: list[Document],
) -> None:
    index = VectorStoreIndex.from_documents(sdr_documents, embed_model=HashingEmbedding())
    retriever = index.as_retriever(similarity_top_k=1)

    # Text we control (notes.txt, through SimpleDirectoryReader's text reader).
    (hit,) = retriever.retrieve("Which lighthouse repairs were approved?")
    assert hit.node.metadata["file_name"] == "notes.txt"

    # Text the model wrote: a word found on one page only leads back to that page.
    read = [d for d in sdr_documents if d.metadata.get("task") == "ocr" and d.text]
    unique = {
        doc.id_: words(doc.text) - set().union(*(words(o.text) for o in read if o is not doc))
        for doc in read
    }
    target = next(doc for doc in read if unique[doc.id_])
    word = sorted(unique[target.id_])[0]
    (hit,) = retriever.retrieve(word)
    assert hit.node.ref_doc_id == target.id_
    assert hit.node.metadata["page_label"] == target.metadata["page_label"]
    assert hit.node.metadata["file_name"] == target.metadata["file_name"]


def test_recorded_failures_do_not_disturb_the_index(sdr_documents: list[Document]) -> None:
    failures = [d for d in sdr_documents if d.metadata.get("error_code")]
    assert failures  # broken.png

    index = VectorStoreIndex.from_documents(sdr_documents, embed_model=HashingEmbedding())
    hits = index.as_retriever(similarity_top_k=3).retrieve("lighthouse")

    assert hits[0].node.metadata["file_name"] == "notes.txt"
    assert all(not h.node.metadata.get("error_code") or h.score == 0.0 for h in hits)
