"""A tiny H2OVL checkpoint whose weights answer every task with a fixed, well-formed answer.

``mississippi-tools build-checkpoint DIR --demo`` writes it so a new user can see every command
work end to end without downloading a model; its answers do not depend on the image.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mississippi_tools.models.h2ovl.testing import (
    TINY_CONFIG,
    build_checkpoint,
    build_tokenizer_files,
)

if TYPE_CHECKING:
    import torch

__all__ = ["DEMO_ANSWERS", "DEMO_EXTRACT_SCHEMA", "DEMO_EXTRACT_TEMPLATE", "build_demo_checkpoint"]

#: The extraction template the demo checkpoint answers (``--schema`` file of the README's demo).
DEMO_EXTRACT_TEMPLATE: dict[str, Any] = {
    "invoice_number": "",
    "date": "",
    "total": 0.0,
    "paid": False,
}

#: The same fields as a JSON Schema (what pydantic writes for the README's ``Invoice`` model).
DEMO_EXTRACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "date": {"type": "string", "format": "date"},
        "total": {"type": "number"},
        "paid": {"type": "boolean"},
    },
    "required": ["invoice_number", "date", "total", "paid"],
}

#: What the demo checkpoint answers, per task, whatever the image. ``ask`` is also the answer to
#: any other prompt (questions, ``generate``, chat completions).
DEMO_ANSWERS: dict[str, str] = {
    "ocr": "Invoice 12345\nDate: 17 Oct 2024\nTotal due: $1,200.00",
    "chart": (
        '{"chart": {"title": "Monthly sales", "type": "bar", "x_axis": "Month", '
        '"y_axis": "Sales (in $)", "series": [{"name": "Sales", "data_points": ['
        '{"label": "January", "value": 1000}, {"label": "February", "value": 1200}, '
        '{"label": "March", "value": 900}]}]}}'
    ),
    "table": (
        "| Product | Price | Quantity |\n| --- | --- | --- |\n| Shoes | $80 | 5 |\n"
        "| T-Shirts | $20 | 10 |"
    ),
    "extract": '{"invoice_number": "12345", "date": "2024-10-17", "total": 1200.0, "paid": false}',
    "ask": "The total is $1,200.",
}

# The decoder of the demo: one layer whose 8 attention heads each copy the token 1..8 positions
# back, so that with the current token the MLP sees the last 9 tokens and looks up the next one.
_DEMO_CONTEXT = 9
_DEMO_CODE_BITS = 8  # each token of the scripts gets an 8-bit code of +-1 values (255 tokens)
_DEMO_HIDDEN = 256
_DEMO_HEAD_DIM = _DEMO_HIDDEN // (_DEMO_CONTEXT - 1)  # 32: 16 RoPE frequencies
# Weight of each RoPE frequency in the heads' scores (they sum to 1): a random search over the
# 16 frequencies of a 32-wide head (rope_theta 1e5), keeping the weights whose score at the
# wanted distance beats every other distance up to 16,384 by the most (13% of the peak).
_ROPE_WEIGHTS = (
    0.236, 0.201, 0.128, 0.024, 0.066, 0.003, 0.004, 0.111,
    0.028, 0.053, 0.035, 0.064, 0.003, 0.0, 0.001, 0.043,
)  # fmt: skip
_PEAK_SCORE = 270.0  # attention score at the wanted distance; 13% of it is a margin of 35
_GATE_SCALE = 16.0  # an MLP unit's gate is +-16 x the norm's gain: fully on or off
_OUTPUT_SIZE = 8.0  # what a firing unit writes into its token's output dimension
_LOGIT_SCALE = 3.0


@dataclass(frozen=True)
class _Script:
    """One scripted answer.

    After a prompt ending in ``prompt`` (``None``: any token), the model writes ``answer``, then
    ``<|end|>``. Where two scripts could both apply, the higher ``priority`` wins.
    """

    name: str
    prompt: tuple[int | None, ...]
    answer: tuple[int, ...]
    priority: int


def build_demo_checkpoint(directory: str | Path, *, seed: int = 0) -> Path:
    """A tiny checkpoint whose greedy answers are well-formed for every task, without a hub.

    The vision tower and tokenizer are those of :func:`build_tiny_checkpoint`; the decoder's
    weights are set by hand so that it writes :data:`DEMO_ANSWERS`: the chart (JSON valid under
    the chart grammar, so ``--plot`` and ``--csv`` work), the table, the OCR text, the invoice of
    :data:`DEMO_EXTRACT_TEMPLATE` (or :data:`DEMO_EXTRACT_SCHEMA`) for extraction, and
    ``DEMO_ANSWERS["ask"]`` for every other prompt. The answers do not depend on the image: the
    image features are zeroed, so the model shows the tools working end to end, not reading.

    How: the decoder is one layer. Its eight attention heads attend, through RoPE, to the token
    exactly 1, 2 ... 8 positions back and copy an 8-bit code of it; with the current token, the
    MLP sees the last nine tokens, and one MLP unit per step of each answer fires when they are
    that step's context, writing the next token. The task is told by the end of its prompt
    (every task has a fixed prompt; extraction the template above). The arithmetic is exact with
    margins that hold in bfloat16, and the weights are stored in bfloat16 like the real model's.

    Args:
        directory: Where to write (created if needed).
        seed: Seed of the (unused, random) vision weights.

    Returns:
        The checkpoint directory.
    """
    from mississippi_tools.models.h2ovl.tokenization import H2OVLTokenizer

    directory = Path(directory)
    build_tokenizer_files(directory)
    tokenizer = H2OVLTokenizer.from_pretrained(directory)
    scripts = _demo_scripts(tokenizer)
    contexts = _script_contexts(scripts, tokenizer.eos_token_id)
    config = copy.deepcopy(TINY_CONFIG)
    config["llm_config"].update(
        {
            "hidden_size": _DEMO_HIDDEN,
            "num_attention_heads": _DEMO_CONTEXT - 1,
            "num_key_value_heads": 1,
            "num_hidden_layers": 1,
            "intermediate_size": -(-len(contexts) // 64) * 64,
        }
    )
    build_checkpoint(directory, config, dtype="bfloat16", seed=seed)
    _write_lookup_decoder(directory, contexts, tokenizer)
    return directory


def _demo_scripts(tokenizer: Any) -> list[_Script]:
    """The demo's answers, each keyed by the end of the prompt its task sends."""
    from mississippi_tools.models.h2ovl import processing
    from mississippi_tools.models.h2ovl.tokenization import TURN_END
    from mississippi_tools.tasks.chart import build_chart_prompt
    from mississippi_tools.tasks.extract import build_extract_prompt
    from mississippi_tools.tasks.ocr import build_ocr_prompt
    from mississippi_tools.tasks.table import build_table_prompt

    def prompt_ids(question: str) -> tuple[int | None, ...]:
        parts = processing.build_prompt(question, num_images=1)
        parts = processing.expand_image_placeholders(parts, [1], 1)
        return tuple(tokenizer.encode_segments(processing.prompt_segments(parts)))

    suffix = tuple(tokenizer.encode(TURN_END + processing.ROLE_ANSWER))
    anything: tuple[int | None, ...] = (None,) * _DEMO_CONTEXT + suffix
    prompts = [
        ("ocr", build_ocr_prompt("text")),
        ("ocr", build_ocr_prompt("markdown")),
        ("chart", build_chart_prompt()),
        ("table", build_table_prompt()),
        ("extract", build_extract_prompt(DEMO_EXTRACT_TEMPLATE)),
        ("extract", build_extract_prompt(DEMO_EXTRACT_SCHEMA)),
    ]
    scripts = [
        _Script(task, prompt_ids(text), _answer_ids(tokenizer, DEMO_ANSWERS[task]), priority=2)
        for task, text in prompts
    ]
    scripts.append(_Script("ask", anything, _answer_ids(tokenizer, DEMO_ANSWERS["ask"]), 1))
    return scripts


def _answer_ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    """The tokens of an answer; JSON starts without SentencePiece's leading space.

    The JSON grammar allows no whitespace before the value, and it would refuse a first piece
    such as ``▁{"``; plain text keeps the space, which decoding drops, as the real model writes.
    """
    ids = list(tokenizer.encode(text))
    if text.startswith(("{", "[")):
        first = tokenizer.id_to_token(ids[0])
        rest = first.removeprefix("▁")
        if rest != first:
            try:
                ids[:1] = [tokenizer.token_to_id(rest)] if rest else []
            except KeyError:
                ids[:1] = tokenizer.encode(rest)[1:] if rest else []
    return tuple(ids)


@dataclass(frozen=True)
class _Context:
    """One MLP unit: fires on ``tokens`` (the last tokens, newest first; ``None``: any)."""

    tokens: tuple[int | None, ...]
    next_token: int
    priority: int
    script: str


def _script_contexts(scripts: list[_Script], eos: int) -> list[_Context]:
    """One unit per distinct (context, next token); raises where a script could go wrong.

    At each step of each answer, the unit of that step must outweigh every unit that could fire
    there for another token (a unit writes ``_amplitude(priority)``). The catch-all script,
    whose prompt is unknown, may lose to a task whose prompt ending it cannot rule out: a
    question that ends like a task's prompt gets that task's answer.
    """
    steps: list[tuple[_Script, tuple[int | None, ...], int]] = []
    for script in scripts:
        sequence = (*script.prompt, *script.answer, eos)
        for i, token in enumerate((*script.answer, eos)):
            position = len(script.prompt) + i
            window = tuple(
                sequence[position - 1 - j] if position > j else None for j in range(_DEMO_CONTEXT)
            )
            steps.append((script, window, token))
    units: dict[tuple[int | None, ...], _Context] = {}
    for script, window, token in steps:
        known = units.get(window)
        if known is not None and known.next_token != token:
            raise ValueError(
                f"the {script.name!r} and {known.script!r} answers continue the same "
                f"{_DEMO_CONTEXT} tokens differently; vary one of them"
            )
        if known is None or known.priority < script.priority:
            units[window] = _Context(window, token, script.priority, script.name)
    contexts = list(units.values())
    for script, window, token in steps:
        own = _amplitude(script.priority)
        rivals: dict[int, float] = {}
        for unit in contexts:
            if unit.next_token == token:
                continue
            if not all(
                u is None or w is None or u == w for u, w in zip(unit.tokens, window, strict=True)
            ):
                continue
            if unit.priority > script.priority and None in window:
                continue
            rivals[unit.next_token] = rivals.get(unit.next_token, 0.0) + _amplitude(unit.priority)
        if rivals and max(rivals.values()) >= own:
            rival = next(u for u in contexts if u.next_token == max(rivals, key=rivals.__getitem__))
            raise ValueError(
                f"the {rival.script!r} answer could take over the {script.name!r} answer; "
                "vary one of them"
            )
    return contexts


def _amplitude(priority: int) -> float:
    """What a unit of a script of this priority writes into its token's output dimension."""
    return _OUTPUT_SIZE * priority


def _write_lookup_decoder(directory: Path, contexts: list[_Context], tokenizer: Any) -> None:
    """Set the decoder's weights so that it writes the next token of each context.

    Residual dimensions: 0 is 1 for every text token (0 for image tokens); then the current
    token's code; then one code per attention head (the token that many positions back); then
    one dimension per token the answers write. A unit's gate adds +-1 per code bit that agrees
    or not with its context and subtracts (bits - 1), so it is +1 times the norm's gain on its
    context and at most -1 elsewhere. Under a JSON grammar that forbids the scripted token, the
    head prefers ``"``, then closing brackets, then ``<|end|>``, so the JSON ends quickly.
    """
    import math

    import torch
    from safetensors.torch import load_file, save_file

    bits, heads, width = _DEMO_CODE_BITS, _DEMO_CONTEXT - 1, _DEMO_HEAD_DIM
    inputs = sorted({t for c in contexts for t in c.tokens if t is not None})
    outputs = sorted({c.next_token for c in contexts})
    if len(inputs) >= 2**bits:
        raise ValueError(f"the answers use {len(inputs)} tokens; at most {2**bits - 1} fit")
    first_output = 1 + bits * _DEMO_CONTEXT
    if first_output + len(outputs) > _DEMO_HIDDEN:
        raise ValueError(f"the answers write {len(outputs)} distinct tokens; too many to fit")
    number = {token: i + 1 for i, token in enumerate(inputs)}  # 0: every other token

    def code(token: int | None) -> torch.Tensor:
        n = number.get(token, 0) if token is not None else 0
        return torch.tensor([1.0 if (n >> b) & 1 else -1.0 for b in range(bits)])

    weights_file = directory / "model.safetensors"
    weights = load_file(str(weights_file))
    vocab = weights["language_model.model.embed_tokens.weight"].shape[0]
    f64 = torch.float64
    embed = torch.zeros(vocab, _DEMO_HIDDEN, dtype=f64)
    embed[:, 0] = 1.0
    embed[:, 1 : 1 + bits] = code(None)
    for token in inputs:
        embed[token, 1 : 1 + bits] = code(token)

    # Attention: a constant query and key (from dimension 0) whose RoPE phases peak at distance
    # h + 1 for head h; the value is the token's code, written to the head's own dimensions.
    gain = math.sqrt(_DEMO_HIDDEN / (1 + bits))  # RMSNorm's gain on a token's embedding
    half = width // 2
    theta = float(TINY_CONFIG["llm_config"]["rope_theta"])
    freqs = theta ** (-torch.arange(0, width, 2, dtype=f64) / width)
    amplitude = torch.tensor(_ROPE_WEIGHTS, dtype=f64).sqrt()
    k_proj = torch.zeros(width, _DEMO_HIDDEN, dtype=f64)
    k_proj[:half, 0] = amplitude / gain
    v_proj = torch.zeros(width, _DEMO_HIDDEN, dtype=f64)
    v_proj[torch.arange(bits), 1 + torch.arange(bits)] = 1.0 / gain
    q_proj = torch.zeros(heads * width, _DEMO_HIDDEN, dtype=f64)
    o_proj = torch.zeros(_DEMO_HIDDEN, heads * width, dtype=f64)
    q_scale = _PEAK_SCORE * math.sqrt(width) / gain
    for h in range(heads):
        distance = h + 1
        q_proj[h * width : h * width + half, 0] = q_scale * amplitude * torch.cos(freqs * distance)
        q_proj[h * width + half : (h + 1) * width, 0] = (
            -q_scale * amplitude * torch.sin(freqs * distance)
        )
        for b in range(bits):
            o_proj[1 + bits * distance + b, h * width + b] = 1.0

    # MLP: one unit per context.
    units = weights["language_model.model.layers.0.mlp.gate_proj.weight"].shape[0]
    gate = torch.zeros(units, _DEMO_HIDDEN, dtype=f64)
    up = torch.zeros(units, _DEMO_HIDDEN, dtype=f64)
    down = torch.zeros(_DEMO_HIDDEN, units, dtype=f64)
    mid_gain = math.sqrt(_DEMO_HIDDEN / (1 + bits * _DEMO_CONTEXT))
    for u, context in enumerate(contexts):
        cared = [(j, t) for j, t in enumerate(context.tokens) if t is not None]
        for j, token in cared:
            gate[u, 1 + bits * j : 1 + bits * (j + 1)] = _GATE_SCALE * code(token)
        gate[u, 0] = -_GATE_SCALE * (bits * len(cared) - 1)
        up[u, 0] = 1.0
        down[first_output + outputs.index(context.next_token), u] = _amplitude(context.priority) / (
            _GATE_SCALE * mid_gain**2
        )

    head = torch.zeros(vocab, _DEMO_HIDDEN, dtype=f64)
    for i, token in enumerate(outputs):
        head[token, first_output + i] = _LOGIT_SCALE
    for token, piece in enumerate(tokenizer.vocab_pieces(vocab)):
        if piece == '"':
            head[token, 0] = 2.0
        elif piece and all(c in '"}]' for c in piece):
            head[token, 0] = 1.5
    head[tokenizer.eos_token_id, 0] += 1.0

    layer = "language_model.model.layers.0."
    dtype = weights[layer + "self_attn.q_proj.weight"].dtype
    new = {
        "language_model.model.embed_tokens.weight": embed,
        "language_model.lm_head.weight": head,
        layer + "self_attn.q_proj.weight": q_proj,
        layer + "self_attn.k_proj.weight": k_proj,
        layer + "self_attn.v_proj.weight": v_proj,
        layer + "self_attn.o_proj.weight": o_proj,
        layer + "mlp.gate_proj.weight": gate,
        layer + "mlp.up_proj.weight": up,
        layer + "mlp.down_proj.weight": down,
        layer + "input_layernorm.weight": torch.ones(_DEMO_HIDDEN, dtype=f64),
        layer + "post_attention_layernorm.weight": torch.ones(_DEMO_HIDDEN, dtype=f64),
        "language_model.model.norm.weight": torch.ones(_DEMO_HIDDEN, dtype=f64),
        # no image features: the answers are the same whatever the image
        "mlp1.3.weight": torch.zeros_like(weights["mlp1.3.weight"], dtype=f64),
        "mlp1.3.bias": torch.zeros_like(weights["mlp1.3.bias"], dtype=f64),
    }
    for name, tensor in new.items():
        if weights[name].shape != tensor.shape:
            raise AssertionError(f"{name}: {tuple(tensor.shape)} != {tuple(weights[name].shape)}")
        weights[name] = tensor.to(dtype)
    save_file(weights, str(weights_file), metadata={"format": "pt"})
