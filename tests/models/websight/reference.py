"""An independent, naive re-statement of the published VMistral computation.

Written from the published remote code's behaviour (modeling_vmistral.py, vision.py and the model
card's preprocessing), sharing no code with mississippi_tools.models: it reads the PUBLISHED tensor
names straight from safetensors, keeps the decoupled embedding and head as two lookups and two
products, preprocesses with transformers' image_transforms as the model card's custom_transform,
tokenizes with transformers' fast tokenizer as the card does, and runs the decoder eagerly with the
original's rotary cos/sin tables and its additive causal + sliding-window mask (finfo.min), with
no KV cache (every step recomputes the whole sequence).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file


def load_published(directory: Path) -> tuple[dict[str, torch.Tensor], dict]:  # type: ignore[type-arg]
    weights: dict[str, torch.Tensor] = {}
    index = directory / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.is_file()
        else ["model.safetensors"]
    )
    for name in files:
        weights.update({k: v.float() for k, v in load_file(str(directory / name)).items()})
    config = json.loads((directory / "config.json").read_text())
    return weights, config


def card_pixels(image: Image.Image, size: int) -> torch.Tensor:
    """The model card's custom_transform: RGB, bilinear resize, rescale, normalize (mean/std .5)."""
    from transformers.image_transforms import (
        normalize,
        rescale,
        resize,
        to_channel_dimension_format,
    )
    from transformers.image_utils import ChannelDimension, PILImageResampling, to_numpy_array

    if image.mode != "RGB":  # the card composites alpha over white
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    x = to_numpy_array(image)
    x = resize(x, (size, size), resample=PILImageResampling.BILINEAR)
    x = rescale(x, scale=1 / 255)
    x = normalize(x, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    x = to_channel_dimension_format(x, ChannelDimension.FIRST)
    return torch.tensor(np.asarray(x)).unsqueeze(0)


def card_prompt_ids(directory: Path, n_latents: int, text: str = "") -> list[int]:
    """The card's prompt through transformers' fast tokenizer (add_special_tokens=False)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    prompt = f"<s><fake_token_around_image>{'<image>' * n_latents}<fake_token_around_image>"
    return list(tokenizer(prompt + text, add_special_tokens=False).input_ids)


def _ln(x: torch.Tensor, w: dict[str, torch.Tensor], p: str, eps: float = 1e-5) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), w[p + ".weight"], w[p + ".bias"], eps)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def image_latents(w: dict[str, torch.Tensor], config: dict, pixels: torch.Tensor) -> torch.Tensor:  # type: ignore[type-arg]
    """[n, 3, S, S] -> [n, n_latents, hidden] as VMistralModel.forward computes them."""
    vision, perceiver = config["vision_config"], config["perceiver_config"]
    t = "model.vision_model.vision_model."
    patch = vision["patch_size"]
    embed = t + "embeddings.patch_embedding."
    x = F.conv2d(pixels, w[embed + "weight"], w[embed + "bias"], stride=patch)
    n, c = x.shape[:2]
    x = x.flatten(2).transpose(1, 2) + w[t + "embeddings.position_embedding.weight"]
    heads = vision["num_attention_heads"]
    d = c // heads
    for i in range(vision["num_hidden_layers"]):
        p = f"{t}encoder.layers.{i}."
        h = _ln(x, w, p + "layer_norm1", 1e-6)

        def proj(name: str, h: torch.Tensor = h, p: str = p) -> torch.Tensor:
            return h @ w[f"{p}self_attn.{name}.weight"].T + w[f"{p}self_attn.{name}.bias"]

        q = (proj("q_proj") * d**-0.5).reshape(n, -1, heads, d).transpose(1, 2)
        k = proj("k_proj").reshape(n, -1, heads, d).transpose(1, 2)
        v = proj("v_proj").reshape(n, -1, heads, d).transpose(1, 2)
        a = (q @ k.transpose(-1, -2)).softmax(-1) @ v
        a = a.transpose(1, 2).reshape(n, -1, c)
        x = x + a @ w[p + "self_attn.out_proj.weight"].T + w[p + "self_attn.out_proj.bias"]
        h = _ln(x, w, p + "layer_norm2", 1e-6)
        h = h @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"]
        h = F.gelu(h, approximate="tanh")
        x = x + h @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
    x = _ln(x, w, t + "post_layernorm", 1e-6)
    # modality projection: fc1, SwiGLU (x*sigmoid(x) of act.fc1 times act.fc2), fc2
    m = "model.modality_projection."
    x = x @ w[m + "fc1.weight"].T
    g = x @ w[m + "act.fc1.weight"].T
    x = (g * torch.sigmoid(g)) * (x @ w[m + "act.fc2.weight"].T)
    x = x @ w[m + "fc2.weight"].T
    # perceiver resampler (IDEFICS style), at the decoder width
    r = "model.perceiver_resampler."
    nh, hd = perceiver["resampler_n_heads"], perceiver["resampler_head_dim"]
    latents = w[r + "latents"].unsqueeze(0).repeat(n, 1, 1)
    for i in range(perceiver["resampler_depth"]):
        p = f"{r}blocks.{i}."
        ctx = _ln(x, w, p + "0.context_layer_norm")
        lat = _ln(latents, w, p + "0.latents_layer_norm")
        both = torch.cat([ctx, lat], dim=-2)
        q = (lat @ w[p + "0.q_proj.weight"].T).reshape(n, -1, nh, hd).transpose(1, 2)
        k = (both @ w[p + "0.k_proj.weight"].T).reshape(n, -1, nh, hd).transpose(1, 2)
        v = (both @ w[p + "0.v_proj.weight"].T).reshape(n, -1, nh, hd).transpose(1, 2)
        if perceiver.get("qk_layer_norms_perceiver"):
            q = _ln(q, w, p + "0.q_layer_norm")
            k = _ln(k, w, p + "0.k_layer_norm")
        scores = (q * hd**-0.5) @ k.transpose(-1, -2)
        attn = (scores - scores.amax(-1, keepdim=True)).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(n, -1, nh * hd)
        latents = latents + out @ w[p + "0.output_proj.weight"].T
        h = _ln(latents, w, p + "1.ln")
        latents = latents + torch.relu(h @ w[p + "1.fc.weight"].T) @ w[p + "1.c_proj.weight"].T
    return _ln(latents, w, r + "layer_norm")


def _decoupled_embedding(
    w: dict[str, torch.Tensor], config: dict, ids: torch.Tensor
) -> torch.Tensor:  # type: ignore[type-arg]
    vocab = config["vocab_size"]
    extra = ids >= vocab
    out = F.embedding(
        torch.where(extra, torch.zeros_like(ids), ids), w["model.embed_tokens.weight"]
    )
    out[extra] = F.embedding(
        ids[extra] - vocab, w["model.embed_tokens.additional_embedding.weight"]
    )
    return out


def logits(
    w: dict[str, torch.Tensor],
    config: dict,  # type: ignore[type-arg]
    ids: list[int],
    pixels: torch.Tensor | None,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float32 logits ``[seq, vocab + additional]`` for one sequence (no padding, no cache)."""
    input_ids = torch.tensor(ids)
    x = _decoupled_embedding(w, config, input_ids)
    if pixels is not None or latents is not None:
        if latents is None:
            latents = image_latents(w, config, pixels)
        slots = input_ids == config["image_token_id"]
        x[slots] = latents.reshape(-1, x.shape[-1])
    seq, hidden = len(ids), config["hidden_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = hidden // heads
    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, d, 2).float() / d))
    t = torch.arange(seq, dtype=torch.float32)  # the original caches max_position_embeddings rows
    freqs = torch.einsum("i,j->ij", t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:seq], emb.sin()[:seq]

    def rotate(u: torch.Tensor) -> torch.Tensor:
        return torch.cat((-u[..., d // 2 :], u[..., : d // 2]), dim=-1)

    i = torch.arange(seq).unsqueeze(1)
    j = torch.arange(seq).unsqueeze(0)
    allowed = j <= i
    if config.get("sliding_window") is not None:
        allowed &= (i - j) < config["sliding_window"]
    mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
    eps = config["rms_norm_eps"]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(seq, heads, d).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(seq, kv, d).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(seq, kv, d).transpose(0, 1)
        q, k = q * cos + rotate(q) * sin, k * cos + rotate(k) * sin
        k = k.repeat_interleave(heads // kv, dim=0)
        v = v.repeat_interleave(heads // kv, dim=0)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + mask
        a = scores.softmax(-1) @ v
        x = x + a.transpose(0, 1).reshape(seq, hidden) @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = _rms(x, w["model.norm.weight"], eps)
    base = x @ w["lm_head.weight"].T
    extra = x @ w["lm_head.additional_fc.weight"].T
    return torch.cat([base, extra], dim=-1)


def greedy(
    w: dict[str, torch.Tensor],
    config: dict,  # type: ignore[type-arg]
    ids: list[int],
    pixels: torch.Tensor | None,
    steps: int,
) -> list[int]:
    """The card's generate: greedy, bad_words_ids [[<image>], [<fake>]], stop at </s>."""
    banned = [config["image_token_id"], config["image_token_id"] - 1]  # <image>, <fake...>
    latents = image_latents(w, config, pixels) if pixels is not None else None
    out: list[int] = []
    for _ in range(steps):
        scores = logits(w, config, ids + out, None, latents)[-1]
        scores[banned] = float("-inf")
        token = int(scores.argmax())
        if token == config["eos_token_id"]:
            break
        out.append(token)
    return out
