"""The in-process engine on the tiny model: batching, cache, streaming, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from PIL import Image

from mississippi_tools.engine.base import GenerationRequest, SamplingParams
from mississippi_tools.engine.local import LocalEngine, LocalEngineConfig
from mississippi_tools.errors import (
    DeadlineExceededError,
    EngineDeadError,
    InvalidInputError,
    PromptTooLongError,
    QueueFullError,
    RequestCancelledError,
)
from tests.support import loaded_image


def _image(seed: int, size: tuple[int, int] = (600, 400)):  # type: ignore[no-untyped-def]
    return loaded_image(Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 120)))


def _request(i: int, tokens: int = 8, **kw) -> GenerationRequest:  # type: ignore[no-untyped-def]
    return GenerationRequest(
        f"Question {i}?", images=[_image(i)], sampling=SamplingParams(max_new_tokens=tokens), **kw
    )


def test_concurrent_requests_batch_and_equal_sequential_results(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    with LocalEngine(tiny_backend, LocalEngineConfig(feature_cache_mb=0)) as engine:
        sequential = [engine.generate(_request(i, tokens=6 + i)).token_ids for i in range(6)]
        handles = [engine.submit(_request(i, tokens=6 + i)) for i in range(6)]
        batched = [h.result(60).token_ids for h in handles]
        assert batched == sequential
        assert max(engine.metrics_snapshot().batch_size_counts) > 1


def test_output_carries_counts_timings_and_cache_hits(tiny_engine: LocalEngine) -> None:
    first = tiny_engine.generate(_request(1))
    second = tiny_engine.generate(_request(1))
    assert first.tiles_per_image == [7]
    assert first.tiles == 7
    assert first.prompt_tokens == len(
        tiny_engine.backend.prepare("Question 1?", [_image(1)]).input_ids
    )
    assert not first.cache_hit
    assert second.cache_hit
    assert "vision" in first.timings
    assert second.timings["vision"] == 0.0
    assert set(first.timings) >= {"queue", "preprocess", "vision", "prefill", "decode", "total"}
    assert first.token_ids == second.token_ids
    assert first.model
    assert first.engine == "local"
    assert first.finish_reason == "length"


def test_stream_deltas_concatenate_to_the_text(tiny_engine: LocalEngine) -> None:
    request = GenerationRequest("Hello there", sampling=SamplingParams(max_new_tokens=20))
    deltas = list(tiny_engine.stream(request))
    again = tiny_engine.generate(
        GenerationRequest("Hello there", sampling=SamplingParams(max_new_tokens=20))
    )
    assert "".join(deltas) == again.text
    assert len(deltas) > 1


async def test_async_twins(tiny_engine: LocalEngine) -> None:
    outputs = await asyncio.gather(*(tiny_engine.agenerate(_request(i)) for i in range(3)))
    assert all(len(o.token_ids) == 8 for o in outputs)
    pieces = [d async for d in tiny_engine.astream(_request(0))]
    assert "".join(pieces) == outputs[0].text


def test_stop_strings_cut_the_answer(tiny_engine: LocalEngine) -> None:
    base = tiny_engine.generate(
        GenerationRequest("Stop test", sampling=SamplingParams(max_new_tokens=12))
    )
    assert len(base.text) > 4
    stop = base.text[3:5]
    out = tiny_engine.generate(
        GenerationRequest("Stop test", sampling=SamplingParams(max_new_tokens=12, stop=(stop,)))
    )
    assert out.finish_reason == "stop"
    assert out.text == base.text[: base.text.find(stop)].strip()


def test_seeded_sampling_is_reproducible(tiny_engine: LocalEngine) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=50, seed=123)
    a = tiny_engine.generate(GenerationRequest("sample", sampling=params)).token_ids
    b = tiny_engine.generate(GenerationRequest("sample", sampling=params)).token_ids
    c = tiny_engine.generate(
        GenerationRequest(
            "sample", sampling=SamplingParams(max_new_tokens=10, temperature=1.0, seed=7)
        )
    ).token_ids
    assert a == b
    assert a != c


def test_deadline_frees_the_slot(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    with LocalEngine(tiny_backend, LocalEngineConfig(max_batch_size=1)) as engine:
        slow = engine.submit(
            GenerationRequest("long", sampling=SamplingParams(max_new_tokens=5000), timeout=0.3)
        )
        with pytest.raises(DeadlineExceededError, match="deadline"):
            slow.result(30)
        assert engine.generate(_request(2, tokens=3)).finish_reason == "length"


def test_cancel_frees_the_slot_and_stream_close_cancels(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    with LocalEngine(tiny_backend, LocalEngineConfig(max_batch_size=1)) as engine:
        handle = engine.submit(
            GenerationRequest("long", sampling=SamplingParams(max_new_tokens=5000))
        )
        time.sleep(0.1)
        handle.cancel()
        with pytest.raises(RequestCancelledError):
            handle.result(30)
        stream = engine.stream(
            GenerationRequest("long", sampling=SamplingParams(max_new_tokens=5000))
        )
        next(stream)
        stream.close()
        assert engine.generate(_request(3, tokens=2)).token_ids
        assert engine.metrics_snapshot().requests_cancelled == 2


def test_full_queue_refuses_instead_of_hanging(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    config = LocalEngineConfig(max_batch_size=1, max_queue_size=1)
    with LocalEngine(tiny_backend, config) as engine:
        handles = []

        def flood() -> None:
            for _ in range(10):
                request = GenerationRequest("q", sampling=SamplingParams(max_new_tokens=2000))
                handles.append(engine.submit(request))

        with pytest.raises(QueueFullError):
            flood()
        for handle in handles:
            handle.cancel()


def test_prompt_longer_than_the_context_is_refused(tiny_engine: LocalEngine) -> None:
    with pytest.raises(PromptTooLongError, match="max_tiles"):
        tiny_engine.generate(GenerationRequest("x", images=[_image(0, (4000, 500))] * 10))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", 0),
        ("max_new_tokens", 10**9),
        ("max_new_tokens", 2.5),
        ("top_p", 0),
        ("top_p", float("nan")),
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("temperature", -1),
        ("repetition_penalty", float("inf")),
        ("seed", 2**70),
        ("seed", -(2**70)),
        ("top_k", True),
    ],
)
def test_bad_sampling_parameters_are_refused_up_front(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        SamplingParams(**{field: value})  # type: ignore[arg-type]


def test_bad_model_options_are_refused_at_submit(tiny_engine: LocalEngine) -> None:
    with pytest.raises(InvalidInputError, match="max_tiles must be >= 1"):
        tiny_engine.submit(GenerationRequest("x", images=[_image(1)], options={"max_tiles": 0}))
    with pytest.raises(InvalidInputError, match="do_image_splitting is not an option of h2ovl"):
        tiny_engine.submit(GenerationRequest("x", options={"do_image_splitting": True}))


def test_max_new_tokens_beyond_the_context_is_refused_naming_it(tiny_engine: LocalEngine) -> None:
    context = tiny_engine.model_info.max_context
    with pytest.raises(InvalidInputError, match=f"context of {context} tokens"):
        tiny_engine.submit(
            GenerationRequest("x", sampling=SamplingParams(max_new_tokens=context + 1))
        )


def test_former_request_fields_are_deprecated_aliases_of_options() -> None:
    with pytest.warns(DeprecationWarning, match="options="):
        request = GenerationRequest("x", max_tiles=2, ocr_mode=True)
    assert request.options == {"max_tiles": 2, "ocr_mode": True}
    assert request.max_tiles is None and not request.ocr_mode


def test_ignore_eos_gives_exactly_max_new_tokens(tiny_engine: LocalEngine) -> None:
    out = tiny_engine.generate(
        GenerationRequest("x", sampling=SamplingParams(max_new_tokens=17, ignore_eos=True))
    )
    assert len(out.token_ids) == 17


def test_closed_engine_refuses_and_fails_pending(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    engine = LocalEngine(tiny_backend, LocalEngineConfig(max_batch_size=1))
    pending = engine.submit(GenerationRequest("long", sampling=SamplingParams(max_new_tokens=5000)))
    engine.close()
    with pytest.raises(RequestCancelledError):
        pending.result(10)
    with pytest.raises(EngineDeadError):
        engine.submit(_request(0))


def test_processor_crash_fails_only_that_request(tiny_engine: LocalEngine) -> None:
    class Broken:
        def __call__(self, token_ids, logits):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    good = tiny_engine.submit(_request(5, tokens=20))
    bad = tiny_engine.submit(
        GenerationRequest(
            "x", logits_processors=[Broken()], sampling=SamplingParams(max_new_tokens=5)
        )
    )
    from mississippi_tools.errors import GenerationError

    with pytest.raises(GenerationError, match="boom"):
        bad.result(30)
    assert len(good.result(30).token_ids) == 20
    assert tiny_engine.alive


def test_many_threads_submitting(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    results: dict[int, list[int]] = {}
    with LocalEngine(tiny_backend) as engine:

        def worker(i: int) -> None:
            results[i] = engine.generate(_request(i % 3, tokens=4)).token_ids

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(results) == 12
    assert results[0] == results[3] == results[6]


def test_prefix_cache_skips_vision_and_prefix_with_identical_results(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    image = _image(7, (800, 1000))
    questions = ["Read the text.", "What is the total?", "Who signed?"]
    with LocalEngine(
        tiny_backend, LocalEngineConfig(feature_cache_mb=0, prefix_cache_mb=0)
    ) as cold:
        expected = [
            cold.generate(
                GenerationRequest(q, images=[image], sampling=SamplingParams(max_new_tokens=6))
            ).token_ids
            for q in questions
        ]
    with LocalEngine(tiny_backend) as engine:
        outputs = [
            engine.generate(
                GenerationRequest(q, images=[image], sampling=SamplingParams(max_new_tokens=6))
            )
            for q in questions
        ]
        stats = engine.metrics_snapshot().prefix_cache
    assert [o.token_ids for o in outputs] == expected
    assert [o.cache_hit for o in outputs] == [False, True, True]
    assert outputs[1].timings["vision"] == 0.0
    assert stats is not None and stats.hits == 2 and stats.entries == 1


def test_prefix_cache_keys_on_images_and_preceding_text(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    from mississippi_tools.engine.runner import ModelRunner

    first = tiny_backend.prepare("q", [_image(1)])
    other_question = tiny_backend.prepare("another question", [_image(1)])
    other_image = tiny_backend.prepare("q", [_image(2)])
    # History before the image changes the prefix; history after it (image in turn 1) does not.
    history_first = tiny_backend.prepare("<image>\nq", [_image(1)], history=[("earlier", "answer")])
    image_first = tiny_backend.prepare("q", [_image(1)], history=[("<image>\nearlier", "answer")])
    key = ModelRunner.prefix_key
    assert key(first) == key(other_question)
    assert key(first) != key(other_image)
    assert key(first) != key(history_first)
    assert key(first) == key(image_first)
    assert key(tiny_backend.prepare("text only", [])) is None


async def test_cancelling_the_awaiting_task_cancels_the_request(tiny_backend) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    with LocalEngine(tiny_backend, LocalEngineConfig(max_batch_size=1)) as engine:
        for delay in (0.0, 0.3):  # while being prepared, and while generating
            task = asyncio.ensure_future(
                engine.agenerate(
                    GenerationRequest("long", sampling=SamplingParams(max_new_tokens=5000))
                )
            )
            await asyncio.sleep(delay)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # The slot comes back: a short request finishes promptly.
        out = await asyncio.wait_for(engine.agenerate(_request(1, tokens=3)), 60)
        assert len(out.token_ids) == 3
        deadline = time.monotonic() + 10
        while engine.metrics_snapshot().requests_cancelled < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert engine.metrics_snapshot().requests_cancelled == 2
