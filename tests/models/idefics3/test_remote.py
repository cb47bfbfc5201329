"""Idefics3 served by vLLM, through MississippiVLM.connect, against the scripted vLLM server.

vLLM cannot run here (no GPU): the scripted server on 127.0.0.1 stands in for it and records the
request bodies, as the project's H2OVL vLLM tests do.
"""

from __future__ import annotations

import httpx
import pytest
from PIL import Image

from mississippi_tools import MississippiVLM
from mississippi_tools.errors import InvalidInputError
from tests.engine.test_remote import Scripted, _completion


def test_vllm_idefics3_gets_the_image_first_chat_and_size_longest_edge() -> None:
    fake = Scripted("vllm", [httpx.Response(200, json=_completion('{"total": 5}'))] * 2)
    image = Image.new("RGB", (300, 200), "white")
    with fake.engine(model="HuggingFaceM4/Idefics3-8B-Llama3") as engine:
        vlm = MississippiVLM(engine)
        assert vlm.model_info.family == "idefics3"
        assert [o.name for o in vlm.model_info.options] == ["longest_edge"]
        result = vlm.extract_result(image, {"total": 0}, options={"longest_edge": 1092})
        assert result.data == {"total": 5}
        vlm.ask(image, "What is the total?")
        with pytest.raises(InvalidInputError, match="max_tiles is not an option of idefics3"):
            vlm.ask(image, "x", max_tiles=2)
    first, second = fake.bodies
    assert first["model"] == "HuggingFaceM4/Idefics3-8B-Llama3"
    assert first["mm_processor_kwargs"] == {"size": {"longest_edge": 1092}}
    assert first["response_format"]["type"] == "json_schema"
    # The card's prompt: User:<image>question<end_of_utterance>\nAssistant: — vLLM renders the
    # checkpoint's chat template from an image part followed by the question.
    content = second["messages"][0]["content"]
    assert [part["type"] for part in content] == ["image_url", "text"]
    assert content[1]["text"].endswith("What is the total?")
    assert "mm_processor_kwargs" not in second
