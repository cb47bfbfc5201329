"""Where transformers' API moved between the releases this project supports.

One place for every "this is spelled differently in transformers X": backends call these helpers
instead of testing versions themselves, so a new rename is one change here.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["cache_keyword", "decoder_cache_kwargs", "idefics_image_inputs_are_4d"]


@functools.cache
def _keyword_for(forward: Any) -> str:
    parameters = inspect.signature(forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_keyword(decoder: nn.Module) -> str:
    """The name under which ``decoder.forward`` takes its key/value cache.

    transformers 5.24 renamed ``past_key_values=`` to ``cache=`` (the old name warns, and goes
    away in 5.40); earlier 5.x releases only know ``past_key_values=``. Passing the wrong one
    either warns on every step or is swallowed by ``**kwargs`` and silently disables the cache, so
    the name is read from the signature rather than assumed.
    """
    return _keyword_for(type(decoder).forward)


def decoder_cache_kwargs(decoder: nn.Module, cache: Any) -> dict[str, Any]:
    """``{<the decoder's cache keyword>: cache}``, to splat into a decoder call."""
    return {cache_keyword(decoder): cache}


@functools.cache
def idefics_image_inputs_are_4d() -> bool:
    """Whether ``IdeficsModel.forward`` takes precomputed image features as 4-D tensors.

    transformers 5.0 unpacks ``perceiver_embeddings`` / ``image_encoder_embeddings`` as
    ``[batch, images, tokens, width]``; 5.24 takes them flattened to ``[batch * images, tokens,
    width]`` (and fails on the 4-D form). Neither the signature nor a version number between the
    two says which, so the forward's own code is read for the 4-D unpacking.
    """
    from transformers.models.idefics import modeling_idefics

    source = inspect.getsource(modeling_idefics.IdeficsModel.forward)
    return "= perceiver_embeddings.size()" in source
