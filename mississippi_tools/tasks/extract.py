"""JSON extraction: the prompt, the retry protocol, and the :class:`ExtractionResult`.

The prompt follows the H2OVL card, which says the model "works best with an explicit JSON
template": ``Extract the details from the image and format the output as JSON:`` followed by the
template (:func:`~mississippi_tools.schema.render_template`).

:class:`ExtractionPlan` is the conversation with the engine, free of I/O (a
:class:`~mississippi_tools.tasks.base.TaskPlan`), so sync and async callers share it:

- **With a grammar** (``constrained=True``, engines whose ``supports_grammar`` is true) the request
  carries ``json_schema`` and the answer is valid JSON for the schema by construction. One attempt
  is expected; an answer cut by ``max_new_tokens`` fails at once with an error saying so (a retry
  with the same budget would be cut again). Only validation beyond the schema (pydantic validators)
  can still fail, and is retried like below.
- **Without one** the answer is parsed leniently
  (:func:`~mississippi_tools.parsing.parse_json_lenient`) and validated; an invalid answer is
  retried up to ``max_retries`` times with a prompt quoting the answer and its errors.

When every attempt fails, :class:`~mississippi_tools.errors.ExtractionError` carries the last raw
text, one error line per attempt and the number of attempts.

**Schema echo.** Small models sometimes answer with the template itself: its example values
(``""``, ``0``, ``false``, ``"open|closed"``, or a caller's sample values) instead of the
image's. Such an answer is valid JSON, so validation cannot catch it: :func:`is_schema_echo`
does (the whole answer equals the template, and the template says something: two or more values,
or a non-empty string). It is retried once with a prompt that names the mistake; an echo again
is returned with :attr:`ExtractionResult.echo` set, since it may also be a page that holds
none of the fields.

**Loops.** An answer that loops is retried once against loops, then
:class:`~mississippi_tools.errors.RepetitionError` (see :mod:`mississippi_tools.tasks.base`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SkipValidation,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from mississippi_tools.engine.base import (
    DEFAULT_MAX_NEW_TOKENS,
    Engine,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
)
from mississippi_tools.engine.repetition import DEFAULT_REPETITION_CHECK, RepetitionCheck
from mississippi_tools.errors import ExtractionError
from mississippi_tools.parsing import JSONRepairError, parse_json_lenient
from mississippi_tools.schema import (
    NormalizedSchema,
    SchemaInput,
    field_confidences,
    normalize_schema,
    render_template,
    validate,
)
from mississippi_tools.tasks.arguments import JSONObject
from mississippi_tools.tasks.base import (
    RunSettings,
    TaskContext,
    arun_plan,
    metadata_for,
    retry_against_repetition,
    run_plan,
)
from mississippi_tools.tasks.catalogue import TaskSpec
from mississippi_tools.tasks.results import TaskResult, cut_note

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.base import TokenizerLike

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "EXTRACT_PROMPT",
    "SPEC",
    "ExtractArguments",
    "ExtractionPlan",
    "ExtractionResult",
    "arun_extraction",
    "build_echo_prompt",
    "build_extract_prompt",
    "build_retry_prompt",
    "is_schema_echo",
    "render_extraction",
    "run_extraction",
]

EXTRACT_PROMPT: Final = "Extract the details from the image and format the output as JSON:"
"""The first line of the extraction prompt (the card's wording); the template follows."""

DEFAULT_MAX_RETRIES: Final = 2
"""Retries after an invalid answer (so at most 3 generations)."""

_QUOTED_ANSWER_LIMIT: Final = 600


class ExtractionResult(TaskResult):
    """Data extracted from an image, valid under the requested schema.

    Example:
        >>> template = {"name": "", "date_of_birth": ""}
        >>> result = vlm.extract_result("form.png", template)  # doctest: +SKIP
        >>> result.data
        {'name': 'Emily Johnson', 'date_of_birth': '1995-05-12'}
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    data: Annotated[
        dict[str, Any] | SerializeAsAny[BaseModel],
        WithJsonSchema({"type": "object", "description": "The extracted data."}),
    ]
    """The validated value: an instance of the pydantic model, or the dict valid under the JSON
    Schema or template."""
    raw_text: str
    """The model's answer the data was parsed from."""
    confidence: dict[str, float] | None = None
    """When requested: the model's probability for each leaf value, keyed by JSON pointer
    (``/items/0/price``); the weakest token of the value. Not a calibrated accuracy."""
    errors: list[str] = Field(default_factory=list)
    """Why the earlier attempts failed (empty when the first one succeeded)."""
    echo: bool = False
    """The answer repeats the template's example values, even after a retry: most likely none
    of the fields is in the image; treat the values as not found."""
    output: SkipJsonSchema[SkipValidation[GenerationOutput]] = Field(exclude=True, repr=False)
    """The engine's output of the successful attempt (token ids, log-probabilities, timings);
    kept out of dumps and JSON Schemas."""

    @property
    def attempts(self) -> int:
        """Generations used, the successful one included."""
        return self.meta.attempts


def build_extract_prompt(
    schema: NormalizedSchema | SchemaInput, instructions: str | None = None
) -> str:
    """The extraction prompt: the card's sentence, the JSON template, then any instructions.

    Args:
        schema: The schema (normalised or not).
        instructions: Extra guidance for the model, added on its own line at the end.

    Returns:
        The prompt, e.g. for the template ``{"name": ""}``::

            Extract the details from the image and format the output as JSON:
            {
              "name": ""
            }
    """
    prompt = f"{EXTRACT_PROMPT}\n{render_template(normalize_schema(schema))}"
    if instructions and instructions.strip():
        prompt += f"\n{instructions.strip()}"
    return prompt


def build_retry_prompt(
    schema: NormalizedSchema | SchemaInput,
    previous_answer: str,
    errors: Sequence[str],
    instructions: str | None = None,
) -> str:
    """The prompt of a retry: the extraction prompt, the invalid answer and what is wrong with it.

    Args:
        schema: The schema.
        previous_answer: The invalid answer (quoted up to 600 characters).
        errors: Its parse or validation errors.
        instructions: As for :func:`build_extract_prompt`.
    """
    quoted = previous_answer.strip() or "(empty)"
    if len(quoted) > _QUOTED_ANSWER_LIMIT:
        quoted = quoted[:_QUOTED_ANSWER_LIMIT] + " ..."
    problems = "\n".join(f"- {error}" for error in errors)
    return (
        f"{build_extract_prompt(schema, instructions)}\n"
        f"Your previous answer was:\n{quoted}\n"
        f"It is not valid:\n{problems}\n"
        "Answer again with only the corrected JSON."
    )


def build_echo_prompt(
    schema: NormalizedSchema | SchemaInput, instructions: str | None = None
) -> str:
    """The prompt of a retry after a schema echo: the extraction prompt and what went wrong."""
    return (
        f"{build_extract_prompt(schema, instructions)}\n"
        "Your previous answer repeated the example values of this template instead of reading "
        "the values from the image. Read each value from the image; write null for a value the "
        "image does not show."
    )


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: ``false`` is not ``0``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def is_schema_echo(value: Any, template: Any) -> bool:
    """Whether ``value`` is the template itself, and the template holds enough to tell.

    A template of one empty or zero value (``{"total": 0}``) is not enough: the image may say 0.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if not _same_json(value, template):
        return False
    leaves = _leaves(template)
    return len(leaves) >= 2 or any(isinstance(leaf, str) and leaf for leaf in leaves)


class ExtractionPlan:
    """The extraction's requests and retries, free of I/O (sync and async callers share it).

    Args:
        schema: A pydantic model class, a JSON Schema, a template, or a normalised schema.
        images: The images to read (none for text-only requests).
        constrained: Send ``json_schema`` so that the engine constrains the answer (engines with
            ``supports_grammar``).
        instructions: Extra guidance added to the prompt.
        options: Model options for every request (``max_tiles`` ...).
        rephrase: Turns each prompt into what the model's family is sent (its dialect).
        confidence: Ask for log-probabilities and fill :attr:`ExtractionResult.confidence`.
        max_new_tokens: Most tokens per attempt (default: ``sampling``'s, else the engine
            default).
        max_retries: Retries after an invalid answer.
        timeout: Seconds before each request fails.
        sampling: Decoding parameters (default: greedy).
        tokenizer: Decodes tokens for the confidences when the engine gives no token texts.
        repetition: How the engine catches an answer that loops (``None``: not at all); a loop
            is retried once against loops, then :class:`~mississippi_tools.errors.RepetitionError`.

    Raises:
        SchemaError: The schema uses a feature that cannot be guaranteed.

    Example:
        >>> plan = ExtractionPlan({"name": ""}, images=[image], constrained=engine.supports_grammar)
        >>> result = run_extraction(engine, plan)
    """

    def __init__(
        self,
        schema: NormalizedSchema | SchemaInput,
        *,
        images: Sequence[LoadedImage] = (),
        constrained: bool,
        instructions: str | None = None,
        options: Mapping[str, Any] | None = None,
        rephrase: Callable[[str], str] | None = None,
        confidence: bool = False,
        max_new_tokens: int | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float | None = None,
        sampling: SamplingParams | None = None,
        tokenizer: TokenizerLike | None = None,
        repetition: RepetitionCheck | None = DEFAULT_REPETITION_CHECK,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.schema = normalize_schema(schema)
        self.images = list(images)
        self.constrained = constrained
        self.instructions = instructions
        self.options = dict(options or {})
        self.rephrase = rephrase or (lambda prompt: prompt)
        self.confidence = confidence
        self.max_retries = max_retries
        self.timeout = timeout
        self.tokenizer = tokenizer
        if sampling is None:
            sampling = SamplingParams(max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
        elif max_new_tokens is not None:
            sampling = dataclasses.replace(sampling, max_new_tokens=max_new_tokens)
        self.sampling = sampling
        self.repetition = repetition
        self.attempts = 0
        self.errors: list[str] = []
        self._last: GenerationRequest | None = None
        self._echo_retried = False

    @classmethod
    def for_engine(
        cls, engine: Engine, schema: NormalizedSchema | SchemaInput, **kwargs: Any
    ) -> ExtractionPlan:
        """A plan using the engine's grammar support (and its tokenizer, when it has one)."""
        backend = getattr(engine, "backend", None)
        kwargs.setdefault("tokenizer", getattr(backend, "tokenizer", None))
        return cls(schema, constrained=engine.supports_grammar, **kwargs)

    @property
    def prompt(self) -> str:
        """The first attempt's prompt."""
        return build_extract_prompt(self.schema, self.instructions)

    def first_request(self) -> GenerationRequest:
        """The first request."""
        return self._request(self.prompt)

    def handle(self, output: GenerationOutput) -> ExtractionResult | GenerationRequest:
        """Read one attempt's output: the result, or the retry to send.

        Raises:
            ExtractionError: The answer was cut by ``max_new_tokens`` (no retry: the same budget
                would cut it again), or the last allowed attempt was invalid too.
            RepetitionError: The answer looped, and looped again on the retry against loops.
        """
        self.attempts += 1
        started = time.perf_counter()
        text = output.text
        if output.finish_reason == "repetition" and self._last is not None:
            self.errors.append(f"the answer fell into a loop after {len(output.token_ids)} tokens")
            self._last = retry_against_repetition(
                self._last, output, attempts=self.attempts, errors=self.errors
            )
            return self._last
        if output.finish_reason != "stop":
            reason = (
                "the generation was cancelled"
                if output.finish_reason == "cancelled"
                else (
                    f"the answer was cut after {len(output.token_ids)} tokens by "
                    f"max_new_tokens={self.sampling.max_new_tokens} (or the context) before the "
                    "JSON was complete; raise max_new_tokens or ask for less data"
                )
            )
            self.errors.append(reason)
            raise self._error(reason, text)
        try:
            value = validate(_parse(text), self.schema, raw_text=text)
        except JSONRepairError as e:
            problems = [f"the answer is not JSON: {e}"]
        except ExtractionError as e:
            problems = e.errors
        else:
            echo = is_schema_echo(_parse(text), self.schema.template)
            if echo and not self._echo_retried:
                self._echo_retried = True
                self.errors.append("the answer repeated the template's example values")
                return self._request(build_echo_prompt(self.schema, self.instructions))
            return self._result(value, output, time.perf_counter() - started, echo=echo)
        self.errors.append("; ".join(problems))
        if self.attempts > self.max_retries:
            mode = " despite the grammar constraint" if self.constrained else ""
            raise self._error(f"the answer does not match the schema{mode}", text)
        return self._request(build_retry_prompt(self.schema, text, problems, self.instructions))

    # -- internals ----------------------------------------------------------------------------

    def _request(self, prompt: str) -> GenerationRequest:
        self._last = GenerationRequest(
            prompt=self.rephrase(prompt),
            images=self.images,
            sampling=self.sampling,
            options=self.options,
            json_schema=self.schema.json_schema if self.constrained else None,
            logprobs=self.confidence,
            timeout=self.timeout,
            repetition=self.repetition,
        )
        return self._last

    def _result(
        self, value: Any, output: GenerationOutput, parse_seconds: float, *, echo: bool = False
    ) -> ExtractionResult:
        confidence = None
        if self.confidence and output.token_logprobs is not None:
            try:
                confidence = field_confidences(
                    output.text,
                    output.token_ids,
                    output.token_logprobs,
                    self.tokenizer,
                    token_texts=output.token_texts,
                )
            except ValueError:
                confidence = None  # no token texts and no tokenizer, or text cut by a stop string
        meta = metadata_for(
            output, self.images, attempts=self.attempts, extra_timings={"parse": parse_seconds}
        )
        return ExtractionResult(
            data=value,
            raw_text=output.text,
            confidence=confidence,
            errors=list(self.errors),
            echo=echo,
            output=output,
            meta=meta,
        )

    def _error(self, reason: str, text: str) -> ExtractionError:
        earlier = self.errors[:-1]
        history = (
            " Earlier attempts: "
            + "; ".join(f"attempt {i}: {e}" for i, e in enumerate(earlier, start=1))
            + "."
            if earlier
            else ""
        )
        return ExtractionError(
            f"no valid JSON after {self.attempts} attempt(s): {reason}.{history}",
            raw_text=text,
            errors=self.errors,
            attempts=self.attempts,
        )


def _parse(text: str) -> Any:
    """Strict JSON first (grammar output always is), then the lenient repairs."""
    try:
        return json.loads(text)
    except ValueError:
        return parse_json_lenient(text)


def run_extraction(engine: Engine, plan: ExtractionPlan) -> ExtractionResult:
    """Run ``plan`` against ``engine`` with blocking calls (retries included).

    Raises:
        ExtractionError: No valid answer (see :meth:`ExtractionPlan.handle`).
    """
    return run_plan(engine, plan)


async def arun_extraction(engine: Engine, plan: ExtractionPlan) -> ExtractionResult:
    """Async twin of :func:`run_extraction`."""
    return await arun_plan(engine, plan)


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


class ExtractArguments(BaseModel):
    """Arguments of the ``extract`` task."""

    model_config = ConfigDict(extra="forbid")

    json_schema: Annotated[
        JSONObject,
        WithJsonSchema(
            {
                "anyOf": [{"type": "object"}, {"type": "string"}],
                "description": "A JSON Schema or a template (an object; or that object as JSON).",
            }
        ),
    ] = Field(
        description=(
            "The shape of the JSON to extract. Either a template whose example values give the "
            'types, e.g. {"name": "", "total": 0.0, "paid": false, "items": [{"description": "", '
            '"amount": 0.0}]}, or a JSON Schema, e.g. {"type": "object", "properties": {"name": '
            '{"type": "string"}}, "required": ["name"]}. Every key of a template is returned; a '
            "value missing from the image comes back as null."
        ),
    )
    instructions: str | None = Field(
        default=None,
        description=(
            "Optional extra guidance, e.g. 'dates as YYYY-MM-DD' or 'amounts without currency "
            "symbols'."
        ),
    )
    confidence: bool = Field(
        default=False,
        description="Also give each value the model's confidence, keyed by JSON pointer.",
    )
    max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES,
        ge=0,
        le=5,
        description="Retries with the validation errors, for engines without a JSON grammar.",
    )

    @field_validator("json_schema")
    @classmethod
    def _supported(cls, value: Any) -> Any:
        normalize_schema(value)  # a SchemaError now, not once per page
        return value


def plan_extract(
    ctx: TaskContext, images: list[LoadedImage], args: ExtractArguments, settings: RunSettings
) -> ExtractionPlan:
    """The extraction conversation: grammar-constrained where the engine can, else retried."""
    return ExtractionPlan(
        args.json_schema,
        images=images,
        constrained=ctx.supports_grammar,
        instructions=args.instructions,
        options={**ctx.dialect.options("extract", args, ctx.info), **settings.options},
        rephrase=lambda prompt: ctx.dialect.prompt("extract", prompt, args),
        confidence=args.confidence,
        max_new_tokens=settings.max_new_tokens or SPEC.default_max_new_tokens,
        max_retries=args.max_retries,
        timeout=settings.timeout,
        tokenizer=ctx.tokenizer,
        repetition=settings.repetition,
    )


def render_extraction(result: ExtractionResult) -> str:
    """The extracted JSON (with confidences when asked), for an LLM."""
    data = (
        result.data.model_dump(mode="json") if isinstance(result.data, BaseModel) else result.data
    )
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if result.confidence:
        weakest = sorted(result.confidence.items(), key=lambda item: item[1])[:5]
        text += "\nLeast certain values: " + ", ".join(f"{k} {v:.2f}" for k, v in weakest)
    return text + cut_note(result.meta)


SPEC: TaskSpec[ExtractArguments, ExtractionResult] = TaskSpec(
    name="extract",
    title="Extract JSON",
    description=(
        "Extract specific fields from an image or a PDF page as JSON (forms, invoices, "
        "receipts, ID cards, business cards, labels), running locally. The answer always "
        "matches the requested JSON shape; fields not found in the image are null. Use it when "
        "you need named values rather than all the text."
    ),
    arguments=ExtractArguments,
    result=ExtractionResult,
    plan=plan_extract,
    render=render_extraction,
    aliases=("extract_json",),
    describe_fixed=lambda fixed: (
        "The answer always has this shape:\n"
        + render_template(normalize_schema(fixed["json_schema"]))
    ),
)
