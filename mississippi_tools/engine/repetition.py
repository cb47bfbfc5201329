"""Loop detection while decoding: stop an answer that repeats itself, and a no-repeat n-gram ban.

Small vision-language models fall into loops: a line, a phrase or a single token written again and
again until ``max_new_tokens`` (Qwen3-VL#241, MinerU#3312, ollama#10767). Left alone, the loop
costs the whole token budget and comes back as a "successful" answer. A request's
:class:`RepetitionCheck` makes the engine watch every generated token:

- **Detection.** The answer is looping when its last tokens are one unit of ``p`` tokens
  (``1 <= p <= max_period``) written again and again: at least ``min_repeats`` times in a row,
  covering at least ``min_span`` tokens. A line repeated is such a unit (its tokens, newline
  included), as is a phrase or one token. The engine then ends the request with
  ``finish_reason="repetition"``. The defaults (6 repeats, 64 tokens, units up to 128 tokens)
  leave ordinary documents alone: a Markdown table separator, a dot leader or a few identical
  form lines are far shorter; a loop passes them within a few dozen tokens.
- **No-repeat n-grams** (``no_repeat_ngram > 0``, what a retry asks for): a token that would
  write an ``n``-token passage already written among the last ``ngram_window`` tokens is banned,
  as DeepSeek-OCR does against loops (n-gram 30, window 90). When the model's own first choice
  is banned ``max_blocked`` times, it is still trying to loop, and the request ends with
  ``finish_reason="repetition"`` too.

Cost: detection is ``O(max_period)`` integer comparisons per token (about 10 µs in Python for
the default), the ban a dictionary lookup; both run in the engine thread beside sampling.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mississippi_tools.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_REPETITION_CHECK", "RepetitionCheck", "RepetitionGuard"]


@dataclass(frozen=True)
class RepetitionCheck:
    """When a generation counts as looping, and whether to ban repeated n-grams.

    Example:
        >>> RepetitionCheck().min_span
        64
    """

    min_repeats: int = 6
    """A unit must be written at least this many times in a row."""
    min_span: int = 64
    """... and the repetition must cover at least this many tokens."""
    max_period: int = 128
    """Longest unit watched, in tokens (a line of about 500 characters)."""
    no_repeat_ngram: int = 0
    """Ban tokens that would repeat an n-gram of this many tokens (0: no ban)."""
    ngram_window: int = 512
    """The ban looks for the n-gram among this many last tokens (0: the whole answer)."""
    max_blocked: int = 3
    """With the ban: end with ``repetition`` once the model's first choice was banned this often."""

    def __post_init__(self) -> None:
        for name, low in (
            ("min_repeats", 2),
            ("min_span", 2),
            ("max_period", 1),
            ("no_repeat_ngram", 0),
            ("ngram_window", 0),
            ("max_blocked", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(
                    f"RepetitionCheck.{name} must be an int >= {low}, got {value!r}; the "
                    f"default is {getattr(RepetitionCheck, name)}"
                )
        if self.no_repeat_ngram == 1:
            raise InvalidInputError(
                "RepetitionCheck.no_repeat_ngram=1 would ban every token already written; use 0 "
                "(off) or a passage length such as 30"
            )


DEFAULT_REPETITION_CHECK = RepetitionCheck()
"""The check tasks use unless told otherwise."""


class RepetitionGuard:
    """One request's loop detector and n-gram ban (engine-side state; one per request).

    Args:
        check: The thresholds.
    """

    def __init__(self, check: RepetitionCheck) -> None:
        self.check = check
        self.tokens: list[int] = []
        # runs[p]: how many of the last tokens equal the token p positions before them.
        self._runs = [0] * (check.max_period + 1)
        # (n-1)-gram -> positions where the token after it was written, and that token.
        self._seen: defaultdict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)
        self.blocked = 0
        self.reason: str | None = None

    def ban(self, logits: torch.Tensor) -> None:
        """Ban (in place) the tokens that would repeat an n-gram; count a blocked first choice.

        ``logits`` is the 1-D ``[vocab]`` tensor about to be sampled from. Nothing is banned
        when the ban would leave no allowed token (a grammar allowing only those).
        """
        n = self.check.no_repeat_ngram
        if n < 2 or len(self.tokens) < n - 1:
            return
        banned = self._banned(n)
        if not banned:
            return
        import torch

        index = torch.tensor(sorted(banned), device=logits.device)
        first_choice = int(torch.argmax(logits))
        kept = logits.clone()
        kept.index_fill_(0, index, float("-inf"))
        if not bool(torch.isfinite(kept).any()):
            return
        if first_choice in banned:
            self.blocked += 1
        logits.copy_(kept)

    def observe(self, token: int) -> bool:
        """Record a generated token; whether the answer is now looping (:attr:`reason` says how)."""
        tokens = self.tokens
        tokens.append(token)
        position = len(tokens) - 1
        n = self.check.no_repeat_ngram
        if n >= 2 and position >= n - 1:
            self._seen[tuple(tokens[position - n + 1 : position])].append((position, token))
        if self.check.no_repeat_ngram >= 2 and self.blocked >= self.check.max_blocked:
            self.reason = (
                f"the model tried {self.blocked} times to repeat a {n}-token passage it had "
                "just written"
            )
            return True
        return self._periodic(position)

    def _periodic(self, position: int) -> bool:
        check = self.check
        tokens = self.tokens
        runs = self._runs
        token = tokens[position]
        for period in range(1, min(check.max_period, position) + 1):
            if tokens[position - period] == token:
                runs[period] += 1
                span = runs[period] + period
                if span >= check.min_span and span >= check.min_repeats * period:
                    self.reason = (
                        f"the last {span} tokens repeat a {period}-token unit "
                        f"{span // period} times"
                    )
                    return True
            else:
                runs[period] = 0
        return False

    def _banned(self, n: int) -> set[int]:
        tokens = self.tokens
        key = tuple(tokens[len(tokens) - n + 1 :])
        earliest = len(tokens) - self.check.ngram_window if self.check.ngram_window else 0
        return {token for position, token in self._seen.get(key, ()) if position >= earliest}
