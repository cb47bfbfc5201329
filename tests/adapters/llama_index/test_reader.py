"""``MississippiImageReader`` through LlamaIndex's own ``SimpleDirectoryReader``, on a real model.

The model is the tiny random checkpoint: it writes random words, so these tests check the
Documents' shape, metadata and failure handling, not what the text says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, SimpleDirectoryReader
from llama_index.core.schema import MetadataMode
from llama_index.core.vector_stores.utils import node_to_metadata_dict

from llama_index.readers.mississippi import MississippiImageReader
from mississippi_tools import (
    ExtractionError,
    ImageDecodeError,
    InvalidInputError,
    MississippiVLM,
    SchemaError,
)

from .conftest import CLOSED_SCHEMA, FAST, NOTES_TEXT, pages_of

SDR_KEYS = ("file_path", "file_name", "file_type", "file_size", "creation_date")


def test_simple_directory_reader_builds_one_document_per_image_and_page(
    sdr_documents: list[Document], tiny_vlm: MississippiVLM
) -> None:
    assert pages_of(sdr_documents) == [
        ("a.png", "1"),
        ("b.jpg", "1"),
        ("broken.png", None),
        ("notes.txt", None),
        ("report.pdf", "1"),
        ("report.pdf", "2"),
        ("report.pdf", "3"),
    ]
    read = [d for d in sdr_documents if d.metadata["file_name"] != "notes.txt"]
    for doc in read:
        assert doc.metadata["task"] == "ocr"
        assert doc.metadata["model"] == tiny_vlm.model_id
        for key in SDR_KEYS:  # SimpleDirectoryReader's extra_info, kept
            assert key in doc.metadata, key
        assert doc.metadata["file_path"].endswith(doc.metadata["file_name"])
    for doc in read:
        if doc.metadata["file_name"] != "broken.png":
            assert doc.text.strip()
            assert doc.metadata["tiles"] == 1  # max_tiles=1
            assert doc.metadata["finish_reason"] in ("stop", "length")
            assert "error_code" not in doc.metadata
    text_doc = next(d for d in sdr_documents if d.metadata["file_name"] == "notes.txt")
    assert text_doc.text == NOTES_TEXT  # other extensions still go to LlamaIndex's readers


def test_a_corrupt_file_is_recorded_not_skipped(sdr_documents: list[Document]) -> None:
    broken = next(d for d in sdr_documents if d.metadata["file_name"] == "broken.png")
    assert broken.text == ""
    assert broken.metadata["error_code"] == "image_decode_error"
    assert broken.metadata["error_type"] == "ImageDecodeError"
    assert "broken.png" in broken.metadata["error_message"]
    assert broken.metadata["tiles"] == 0


def test_metadata_is_flat_json_and_kept_out_of_the_embedding(
    sdr_documents: list[Document],
) -> None:
    for doc in sdr_documents:
        json.dumps(doc.metadata)
        node_to_metadata_dict(doc, flat_metadata=True)  # what Chroma, Qdrant... require
    page = next(d for d in sdr_documents if d.metadata["file_name"] == "report.pdf")
    for key in ("task", "model", "tiles", "finish_reason", "result_json", "file_path"):
        assert key in page.excluded_embed_metadata_keys
    for key in ("task", "model", "tiles", "finish_reason", "result_json"):
        assert key in page.excluded_llm_metadata_keys
    embedded = page.get_content(metadata_mode=MetadataMode.EMBED)
    assert embedded == f"page_label: 1\n\n{page.text}"
    shown = page.get_content(metadata_mode=MetadataMode.LLM)
    assert "file_path: " in shown
    assert "model: " not in shown
    broken = next(d for d in sdr_documents if d.metadata["file_name"] == "broken.png")
    assert "error_message" in broken.excluded_embed_metadata_keys
    assert "error_message" not in broken.excluded_llm_metadata_keys


async def test_async_simple_directory_reader_reads_files_concurrently(
    tiny_vlm: MississippiVLM, image_folder: Path, sdr_documents: list[Document]
) -> None:
    reader = MississippiImageReader(tiny_vlm, on_error="record", concurrency=3, **FAST)
    sdr = SimpleDirectoryReader(image_folder, file_extractor=reader.file_extractor())

    documents = await sdr.aload_data()

    assert pages_of(documents) == pages_of(sdr_documents)
    read = [d for d in documents if d.metadata.get("task") == "ocr"]
    assert [d.metadata.get("error_code") for d in read] == [None, None, "image_decode_error"] + [
        None
    ] * 3
    # Every page slot came back: the next call can use the full budget, and no more.
    assert reader._slots.available() == 3


def test_raise_policy_propagates_through_simple_directory_reader(
    tiny_vlm: MississippiVLM, corrupt_folder: Path
) -> None:
    reader = MississippiImageReader(tiny_vlm)  # on_error="raise" is the default
    sdr = SimpleDirectoryReader(
        corrupt_folder, file_extractor=reader.file_extractor(), raise_on_error=True
    )

    with pytest.raises(Exception, match="Error loading file") as caught:
        sdr.load_data()

    cause = caught.value.__cause__
    assert isinstance(cause, ImageDecodeError)
    assert "broken.png" in str(cause)


def test_simple_directory_reader_skips_failed_files_unless_told_otherwise(
    tiny_vlm: MississippiVLM, corrupt_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SimpleDirectoryReader's default (raise_on_error=False) drops a file whose reader raises.

    It prints "Failed to load file ... Skipping..." and returns nothing for it; that is its
    behaviour, not ours. Hence on_error="record" for folders, or raise_on_error=True.
    """
    raising = MississippiImageReader(tiny_vlm)
    recording = MississippiImageReader(tiny_vlm, on_error="record")

    dropped = SimpleDirectoryReader(corrupt_folder, file_extractor=raising.file_extractor())
    kept = SimpleDirectoryReader(corrupt_folder, file_extractor=recording.file_extractor())

    assert dropped.load_data() == []
    assert "Skipping" in capsys.readouterr().out
    documents = kept.load_data()
    assert [(d.metadata["file_name"], d.metadata["error_code"]) for d in documents] == [
        ("broken.png", "image_decode_error"),
        ("text.png", "image_decode_error"),
    ]


def test_a_list_of_files_is_batched_across_files(
    tiny_vlm: MississippiVLM, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of several files go through one batch iterator (tests/test_batch.py shows they
    are in flight together); the Documents keep the input order."""
    reader = MississippiImageReader(tiny_vlm, concurrency=2, **FAST)

    documents = reader.load_data(
        [image_folder / "a.png", image_folder / "report.pdf"], extra_info={"source": "test"}
    )

    assert pages_of(documents) == [
        ("a.png", "1"),
        ("report.pdf", "1"),
        ("report.pdf", "2"),
        ("report.pdf", "3"),
    ]
    assert all(d.metadata["source"] == "test" for d in documents)


def test_page_selection_applies_to_documents_and_a_bad_one_is_recorded(
    tiny_vlm: MississippiVLM, image_folder: Path
) -> None:
    reader = MississippiImageReader(tiny_vlm, pages="2", on_error="record", **FAST)
    assert pages_of(reader.load_data([image_folder / "report.pdf", image_folder / "a.png"])) == [
        ("report.pdf", "2"),
        ("a.png", "1"),
    ]

    too_far = MississippiImageReader(tiny_vlm, pages="2-5", on_error="record", **FAST)
    (failure,) = too_far.load_data(image_folder / "report.pdf")
    assert failure.metadata["error_code"] == "pdf_error"
    assert failure.metadata["page_label"] is None


def test_a_failed_page_is_recorded_or_raised_with_the_file_name(
    tiny_vlm: MississippiVLM, image_folder: Path
) -> None:
    """A random model writes no chart data, so charts fail: the case of an unreadable page."""
    recording = MississippiImageReader(tiny_vlm, mode="chart", on_error="record", **FAST)
    (failure,) = recording.load_data(image_folder / "a.png")
    assert failure.metadata["error_code"] == "extraction_failed"
    assert failure.metadata["page_label"] == "1"
    assert failure.metadata["task"] == "read_chart"

    raising = MississippiImageReader(tiny_vlm, mode="chart", **FAST)
    with pytest.raises(ExtractionError) as caught:
        raising.load_data(image_folder / "a.png")
    assert any("a.png" in note for note in caught.value.__notes__)


def test_extract_mode_puts_fields_in_metadata_and_json_in_text(
    tiny_vlm: MississippiVLM, image_folder: Path
) -> None:
    """Needs ``vlm.extract_result`` (the JSON extraction work)."""
    reader = MississippiImageReader(
        tiny_vlm, mode="extract", schema=CLOSED_SCHEMA, max_new_tokens=64, max_tiles=1
    )

    (doc,) = reader.load_data(image_folder / "a.png", extra_info={"paid": "kept"})

    data = json.loads(doc.text)
    assert set(data) == {"paid", "kind"}
    assert json.loads(doc.metadata["result_json"])["data"] == data
    assert doc.metadata["kind"] in ("invoice", "receipt")
    assert doc.metadata["kind"] == data["kind"]
    assert doc.metadata["paid"] == "kept"  # a field never overwrites extra_info
    assert "kind" in doc.excluded_embed_metadata_keys
    assert "kind" in doc.excluded_llm_metadata_keys
    assert "result_json" in doc.excluded_llm_metadata_keys
    node_to_metadata_dict(doc, flat_metadata=True)


def test_errors_about_every_file_are_raised_even_when_recording(
    tiny_vlm: MississippiVLM, image_folder: Path
) -> None:
    bad_schema = {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}

    with pytest.raises(SchemaError):  # at construction, before any file
        MississippiImageReader(tiny_vlm, mode="extract", schema=bad_schema, on_error="record")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "poem"}, "unknown mode"),
        ({"on_error": "ignore"}, "unknown on_error"),
        ({"mode": "extract"}, "the extract task needs arguments"),
        ({"schema": {"a": ""}}, "json_schema: Extra inputs are not permitted"),
        ({"task": "read_chart", "arguments": {"format": "text"}}, "format: Extra inputs"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_bad_settings_fail_at_construction(
    tiny_vlm: MississippiVLM, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        MississippiImageReader(tiny_vlm, **kwargs)


def test_the_reader_needs_a_model_and_never_loads_one() -> None:
    with pytest.raises(TypeError, match=r"MississippiVLM\.load"):
        MississippiImageReader("h2oai/h2ovl-mississippi-800m")  # type: ignore[arg-type]


def test_files_on_an_fsspec_filesystem_are_read_through_it(
    tiny_vlm: MississippiVLM, image_folder: Path
) -> None:
    """SimpleDirectoryReader passes ``fs=`` for non-local filesystems; the reader reads with it."""
    import fsspec  # type: ignore[import-untyped]

    fs = fsspec.filesystem("memory")
    fs.pipe("/llamaindex-scans/a.png", (image_folder / "a.png").read_bytes())
    fs.pipe("/llamaindex-scans/bad.png", b"not a png")
    reader = MississippiImageReader(tiny_vlm, on_error="record", **FAST)
    try:
        sdr = SimpleDirectoryReader(
            "/llamaindex-scans", fs=fs, file_extractor=reader.file_extractor()
        )
        good, bad = sdr.load_data()
    finally:
        fs.rm("/llamaindex-scans", recursive=True)

    assert (good.metadata["file_path"], good.metadata["page_label"]) == (
        "/llamaindex-scans/a.png",
        "1",
    )
    assert good.text.strip()
    assert bad.metadata["error_code"] == "image_decode_error"
