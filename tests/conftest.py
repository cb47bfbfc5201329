from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BAD_INPUTS = Path(__file__).parent / "bad_inputs"


@pytest.fixture(scope="session")
def bad_inputs() -> Path:
    """The committed corpus of awkward and broken input files (see bad_inputs/make_corpus.py)."""
    return BAD_INPUTS


@pytest.fixture(scope="session")
def corpus() -> ModuleType:
    """tests/bad_inputs/make_corpus.py, to build variants of the corpus files in memory."""
    spec = importlib.util.spec_from_file_location("make_corpus", BAD_INPUTS / "make_corpus.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny H2OVL checkpoint in the original on-disk format (built once per session)."""
    from mississippi_tools.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-h2ovl"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_checkpoint: Path):  # type: ignore[no-untyped-def]
    """The tiny checkpoint loaded on the CPU in float32."""
    from mississippi_tools.models.registry import load_backend

    return load_backend(tiny_checkpoint, device="cpu", dtype="float32")


@pytest.fixture
def tiny_engine(tiny_backend):  # type: ignore[no-untyped-def]
    """A fresh local engine over the shared tiny model (closed after the test)."""
    from mississippi_tools.engine.local import LocalEngine

    engine = LocalEngine(tiny_backend)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def scripted_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with weights set so that greedy decoding writes ``SCRIPTED_ANSWER``."""
    from mississippi_tools.testing import build_scripted_checkpoint
    from tests.support import SCRIPTED_ANSWER

    target = tmp_path_factory.mktemp("scripted") / "scripted-h2ovl"
    return build_scripted_checkpoint(tiny_checkpoint, target, SCRIPTED_ANSWER)


@pytest.fixture(scope="session")
def scripted_vlm(scripted_checkpoint: Path):  # type: ignore[no-untyped-def]
    """A MississippiVLM over the scripted checkpoint: answers that parse, from a real model."""
    from mississippi_tools import MississippiVLM
    from mississippi_tools.models.registry import load_backend

    vlm = MississippiVLM.from_backend(
        load_backend(scripted_checkpoint, device="cpu", dtype="float32")
    )
    yield vlm
    vlm.close()


@pytest.fixture(scope="session")
def grounding_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint scripted to answer in grounding tokens (``GROUNDING_ANSWER``)."""
    from mississippi_tools.testing import build_scripted_checkpoint
    from tests.support import GROUNDING_ANSWER

    target = tmp_path_factory.mktemp("grounding") / "grounding-h2ovl"
    return build_scripted_checkpoint(tiny_checkpoint, target, GROUNDING_ANSWER)


@pytest.fixture(scope="session")
def grounding_vlm(grounding_checkpoint: Path):  # type: ignore[no-untyped-def]
    """A MississippiVLM over the grounding checkpoint: answers with real region tokens."""
    from mississippi_tools import MississippiVLM
    from mississippi_tools.models.registry import load_backend

    vlm = MississippiVLM.from_backend(
        load_backend(grounding_checkpoint, device="cpu", dtype="float32")
    )
    yield vlm
    vlm.close()


@pytest.fixture(scope="session")
def looping_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint scripted to write ``LOOPING_ANSWER`` again and again (a loop)."""
    from mississippi_tools.testing import build_scripted_checkpoint
    from tests.support import LOOPING_ANSWER

    target = tmp_path_factory.mktemp("looping") / "looping-h2ovl"
    return build_scripted_checkpoint(tiny_checkpoint, target, LOOPING_ANSWER, loop=True)


@pytest.fixture(scope="session")
def looping_backend(looping_checkpoint: Path):  # type: ignore[no-untyped-def]
    """The looping checkpoint loaded on the CPU."""
    from mississippi_tools.models.registry import load_backend

    return load_backend(looping_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_vlm(tiny_backend):  # type: ignore[no-untyped-def]
    """A MississippiVLM over the tiny model, shared by the session (closed at the end)."""
    from mississippi_tools import MississippiVLM

    vlm = MississippiVLM.from_backend(tiny_backend)
    yield vlm
    vlm.close()


@pytest.fixture(scope="session")
def sample_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real PNG with some drawn text-like strokes."""
    from PIL import Image, ImageDraw

    path = tmp_path_factory.mktemp("images") / "sample.png"
    image = Image.new("RGB", (640, 480), "white")
    draw = ImageDraw.Draw(image)
    draw.text((40, 40), "Invoice 12345\nTotal: $1,200", fill="black")
    draw.rectangle((40, 200, 300, 400), outline="navy", width=4)
    image.save(path)
    return path
