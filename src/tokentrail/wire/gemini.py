"""Google Gemini: ``…:generateContent`` / ``…:streamGenerateContent`` and the embedding methods.

The same wire format is served by the Gemini API (``/v1beta/models/{model}:generateContent``) and by
Vertex AI (``/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent``).
The model is named in the path, not the request body: see `model_from_path` / `request_from_path`.

``usageMetadata`` (https://ai.google.dev/api/generate-content#UsageMetadata and the Vertex
``GenerateContentResponse.UsageMetadata`` reference; field docs in googleapis/python-genai
``google/genai/types.py``):

- ``promptTokenCount`` includes ``cachedContentTokenCount`` ("When cached_content is set, this is
  still the total effective prompt size meaning this includes the number of tokens in the cached
  content").
- ``toolUsePromptTokenCount`` ("tokens in the results from tool executions, which are provided back
  to the model as input": Google Search grounding, URL context) is *not* part of
  ``promptTokenCount``: ``totalTokenCount`` "is the sum of prompt_token_count,
  candidates_token_count, tool_use_prompt_token_count, and thoughts_token_count" (googleapis
  java-genai ``GenerateContentResponseUsageMetadata``). It is billed as input (vercel/ai#14575,
  pydantic/genai-prices#200; QuantumNous/new-api#2935 shows 151 + 1089 + 18329 + 1120 = 20689),
  so tokentrail's input is ``promptTokenCount + toolUsePromptTokenCount``.
- ``thoughtsTokenCount`` is *not* part of ``candidatesTokenCount`` (same total; simonw/llm-gemini#75,
  vercel/ai#6082): output is ``candidatesTokenCount + thoughtsTokenCount``, reasoning the thoughts.
- ``*TokensDetails`` lists split a count by modality: parts, checked, kept raw.
- Counts equal to 0 are omitted: the API speaks proto3 JSON, which leaves out fields holding their
  default value (https://protobuf.dev/programming-guides/json/), e.g. no ``candidatesTokenCount``
  when generation stops at MAX_TOKENS while thinking (adcontextprotocol/adcp#7359). So when the
  object carries a valid ``totalTokenCount`` — the usage *was* computed — an absent
  ``promptTokenCount`` or ``candidatesTokenCount`` reads as 0. The optional counts (cache, tool use,
  thoughts) stay None when absent.

Streams: with ``?alt=sse`` the body is SSE, one ``data: {GenerateContentResponse}`` per chunk, each
chunk's ``usageMetadata`` *cumulative*: the last one wins, never the sum. Without ``alt=sse`` the
body is a JSON array of the same chunks (content-type application/json), which capture reads whole:
`GenerateContent.parse` accepts it. A stream is complete once a chunk with a ``finishReason`` (or a
``promptFeedback.blockReason``) has been seen together with, or followed by, ``usageMetadata``.
A stream without any usage is therefore never known whole (Vertex sends the usage in a chunk after
the finish, so a stream that ends at the finish may have lost it): its counted output is a floor.

Output text (counted when no output count came, `ParsedCall.output_text`): every candidate's parts in
order, ``text`` (thought summaries, ``"thought": true``, left out: thinking is billed apart and in full,
as ``thoughtsTokenCount``), a ``functionCall`` as its name plus its args as compact JSON, and
``executableCode``'s code, the rule `tokentrail.sim.gemini` counts ``candidatesTokenCount`` by. A
thinking model's hidden thoughts are not on the wire: for those the count is a floor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec

from tokentrail.records import Flag
from tokentrail.usage import Provenance, Source, Usage
from tokentrail.wire._base import (
    REPORTED,
    Count,
    ParsedCall,
    RequestInfo,
    StreamOutcome,
    UsageMap,
    WholeBody,
    as_partial,
    compact_json,
    is_count,
    json_value,
    loads,
    read_usage,
)
from tokentrail.wire.sse import SseDecoder

SUFFIXES: tuple[str, ...] = (
    ":generateContent",
    ":streamGenerateContent",
    ":embedContent",
    ":batchEmbedContents",
    ":predict",
)
"""Path endings this module can own (``:predict`` only for Google's embedding models)."""

USAGE = UsageMap(
    input=("promptTokenCount", "toolUsePromptTokenCount"),
    output=("candidatesTokenCount", "thoughtsTokenCount"),
    cache_read=("cachedContentTokenCount",),
    reasoning=("thoughtsTokenCount",),
    total="totalTokenCount",
)

_OMITTED_ZEROS = ("promptTokenCount", "candidatesTokenCount")

# (modality breakdown, the count it splits)
_DETAILS = (
    ("promptTokensDetails", "promptTokenCount"),
    ("cacheTokensDetails", "cachedContentTokenCount"),
    ("candidatesTokensDetails", "candidatesTokenCount"),
    ("toolUsePromptTokensDetails", "toolUsePromptTokenCount"),
)


def usage_from(raw: Any, spec: UsageMap = USAGE) -> tuple[Usage, Provenance, set[str]]:
    """Normalize one ``usageMetadata`` object; validate every number, never raise."""
    counted = raw
    total = raw.get("totalTokenCount") if type(raw) is dict else None
    if type(total) is int and total >= 0:  # a total may pass MAX_COUNT
        missing = [k for k in _OMITTED_ZEROS if k in spec.input + spec.output and raw.get(k) is None]
        if missing:
            counted = {**raw, **dict.fromkeys(missing, 0)}
    usage, provenance, flags = read_usage(counted, spec)
    if type(raw) is not dict:
        return usage, provenance, flags
    cached, prompt = raw.get("cachedContentTokenCount"), counted.get("promptTokenCount")
    if is_count(cached) and is_count(prompt) and cached > prompt:
        flags.add(Flag.PARTS_EXCEED_WHOLE)  # cached is part of the prompt, not of the tool-use input
    for details, whole in _DETAILS:
        entries = raw.get(details)
        if entries is None:
            continue
        if type(entries) is not list or not all(type(e) is dict for e in entries):
            flags.add(Flag.INVALID_VALUE)
            continue
        counts = [e.get("tokenCount", 0) for e in entries]  # an omitted tokenCount is a proto3 zero
        if not all(is_count(c) for c in counts):
            flags.add(Flag.INVALID_VALUE)
        elif is_count(counted.get(whole)) and sum(counts) > counted[whole]:
            flags.add(Flag.PARTS_EXCEED_WHOLE)
    return usage, provenance, flags


def _part_text(part: Any) -> str:
    if type(part) is not dict:
        return ""
    text = part.get("text")
    if type(text) is str:
        return "" if part.get("thought") is True else text
    call = part.get("functionCall")
    if type(call) is dict:
        name = call.get("name")
        args = call.get("args")
        return (name if type(name) is str else "") + ("" if args is None else compact_json(args))
    code = part.get("executableCode")
    if type(code) is dict and type(code.get("code")) is str:
        return code["code"]  # type: ignore[no-any-return]
    return ""


def chunk_text(chunk: Any) -> str:
    """The generated text of one response object (or stream chunk): see the module docstring."""
    if type(chunk) is not dict:
        return ""
    candidates = chunk.get("candidates")
    if type(candidates) is not list:
        return ""
    out: list[str] = []
    for candidate in candidates:
        content = candidate.get("content") if type(candidate) is dict else None
        parts = content.get("parts") if type(content) is dict else None
        if type(parts) is list:
            out += [_part_text(part) for part in parts]
    return "".join(out)


def _call(
    raw_usage: Any,
    *,
    model: Any,
    response_id: Any,
    complete: bool,
    output_text: Callable[[], str | None] | None = None,
) -> ParsedCall:
    usage, provenance, flags = usage_from(raw_usage)
    if not complete:
        # Cumulative usage seen before the cut is a floor, not the bill, on both sides: the
        # tool-use part of the input can still grow while the model calls built-in tools.
        provenance = as_partial(provenance)
        flags.add(Flag.STREAM_INCOMPLETE)
    return ParsedCall(
        model=model if isinstance(model, str) and model else None,
        usage=usage,
        provenance=provenance,
        raw_usage=raw_usage,
        flags=frozenset(flags),
        response_id=response_id if isinstance(response_id, str) and response_id else None,
        complete=complete,
        # Asked only when the output count is missing (the pipeline counts the text then).
        output_text=output_text if usage.output_tokens is None or not complete else None,
    )


def _finished(chunk: dict[str, Any]) -> bool:
    """True for the chunk that ends generation: a candidate's finishReason, or a blocked prompt."""
    candidates = chunk.get("candidates")
    if type(candidates) is list:
        for candidate in candidates:
            if type(candidate) is dict and isinstance(candidate.get("finishReason"), str) and candidate["finishReason"]:
                return True
    feedback = chunk.get("promptFeedback")
    return type(feedback) is dict and isinstance(feedback.get("blockReason"), str) and bool(feedback["blockReason"])


class _Chunks:
    """What a sequence of response chunks says, folded chunk by chunk (shared by SSE and JSON arrays)."""

    __slots__ = ("chunks", "error", "final", "finish_seen", "model", "response_id", "usage")

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        """Every chunk added, for the output text."""
        self.usage: Any = None
        self.model: Any = None
        self.response_id: Any = None
        self.finish_seen = False
        self.final = False
        self.error = False

    def add(self, chunk: Any) -> None:
        if type(chunk) is not dict:
            return
        self.chunks.append(chunk)
        if "error" in chunk:
            self.error = True  # {"error": {"code", "message", "status"}} ends a broken stream
            return
        if not self.finish_seen and _finished(chunk):
            self.finish_seen = True
        self.model = chunk.get("modelVersion") or self.model
        self.response_id = chunk.get("responseId") or self.response_id
        if "usageMetadata" in chunk:
            self.usage = chunk["usageMetadata"]  # cumulative: the last one wins
            self.final = self.final or self.finish_seen

    def call(self, *, stream: bool) -> ParsedCall:
        complete = not stream or (self.final and not self.error)
        chunks = self.chunks
        return _call(self.usage, model=self.model, response_id=self.response_id, complete=complete,
                     output_text=lambda: "".join([chunk_text(c) for c in chunks]))  # fmt: skip


class GenerateStream:
    """Parses an ``alt=sse`` stream as it passes.

    Every chunk is a whole response object, but only a few matter: the ones with usage or an end
    (their raw bytes are kept by reference; the last usage chunk is decoded once, at the end), and
    the rare ones naming an ``error`` or a finish. Text chunks cost a few substring checks. Every
    chunk's bytes are kept by reference (no copy, no parse): their text is decoded later, off the
    caller's thread, if no output count came.
    """

    __slots__ = ("_error", "_events", "_final", "_finish_seen", "_first", "_last_usage", "_sse")

    def __init__(self) -> None:
        self._events: list[bytes] = []
        self._sse = SseDecoder()
        self._first: bytes | None = None
        self._last_usage: bytes | None = None
        self._finish_seen = False
        self._final = False
        self._error = False

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            self.event(event.data)

    def event(self, data: bytes) -> None:
        """One chunk's JSON payload."""
        self._events.append(data)
        if self._first is None:
            self._first = data
        # A quoted key cannot occur unescaped inside a JSON string, so these checks only hit keys.
        if b'"error"' in data or (not self._finish_seen and (b'"finishReason"' in data or b'"blockReason"' in data)):
            obj = loads(data)
            if type(obj) is dict:
                if "error" in obj:
                    self._error = True
                    return
                if not self._finish_seen and _finished(obj):
                    self._finish_seen = True
        if b'"usageMetadata"' in data:
            self._last_usage = data
            self._final = self._final or self._finish_seen

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        chunks = _Chunks()
        if self._first is not None and self._first is not self._last_usage:
            first = loads(self._first)
            if type(first) is dict and "error" not in first:
                chunks.model, chunks.response_id = first.get("modelVersion"), first.get("responseId")
        last = loads(self._last_usage) if self._last_usage is not None else None
        if type(last) is dict:
            chunks.add(last)
        # A body that ended cleanly after the finish chunk is whole, usage or not (a server that sends
        # none, as OpenAI's streams are read); cut after it, the usage Vertex sends last may be lost.
        chunks.final = self._final or (
            outcome is StreamOutcome.COMPLETE and self._finish_seen and self._last_usage is None
        )
        chunks.error = self._error
        complete = chunks.final and not chunks.error
        events = self._events
        return _call(chunks.usage, model=chunks.model, response_id=chunks.response_id, complete=complete,
                     output_text=lambda: "".join([chunk_text(loads(e)) for e in events]))  # fmt: skip


# -- the fast lane: Gemini's own usage shape, decoded and checked in C --------------------------------


class _Detail(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    modality: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    tokenCount: Count = 0  # an omitted tokenCount is a proto3 zero


class _Usage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Exactly the keys Google documents, every count valid; anything else takes the general way."""

    promptTokenCount: Count | None = None
    candidatesTokenCount: Count | None = None
    totalTokenCount: Count | None = None
    cachedContentTokenCount: Count | None = None
    toolUsePromptTokenCount: Count | None = None
    thoughtsTokenCount: Count | None = None
    promptTokensDetails: list[_Detail] | None = None
    cacheTokensDetails: list[_Detail] | None = None
    candidatesTokensDetails: list[_Detail] | None = None
    toolUsePromptTokensDetails: list[_Detail] | None = None
    trafficType: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # not a count


class _Body(msgspec.Struct, gc=False):
    modelVersion: str | None = None
    responseId: str | None = None
    usageMetadata: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # a Raw cannot be in a union
    error: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_decode_body = msgspec.json.Decoder(_Body).decode
_decode_usage = msgspec.json.Decoder(_Usage).decode


def _within(details: list[_Detail] | None, whole: int | None) -> bool:
    return details is None or whole is None or sum(d.tokenCount for d in details) <= whole


def fast_parse(body: bytes) -> ParsedCall | None:
    """`GenerateContent.parse` of a response object whose usage is in Google's documented shape and
    raises no flag, read in C without building the rest of the body; ``None`` for anything else,
    which the general way reads instead."""
    try:
        fields = _decode_body(body)
        usage = _decode_usage(fields.usageMetadata) if fields.usageMetadata and not fields.error else None
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if usage is None:
        return None
    prompt, candidates, total = usage.promptTokenCount, usage.candidatesTokenCount, usage.totalTokenCount
    if total is not None:  # the usage was computed: an omitted count is a proto3 zero
        prompt, candidates = prompt or 0, candidates or 0
    tool, thoughts, cached = usage.toolUsePromptTokenCount, usage.thoughtsTokenCount, usage.cachedContentTokenCount
    inp = None if prompt is None and tool is None else (prompt or 0) + (tool or 0)
    out = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    if (
        (cached is not None and (inp is None or cached > inp or (prompt is not None and cached > prompt)))
        or (total is not None and inp is not None and out is not None and total != inp + out)
        or not _within(usage.promptTokensDetails, prompt)
        or not _within(usage.cacheTokensDetails, cached)
        or not _within(usage.candidatesTokensDetails, candidates)
        or not _within(usage.toolUsePromptTokensDetails, tool)
    ):
        return None  # a flag to raise: the general way raises it
    if inp is None or out is None:
        return None  # a side missing: the general way says which
    return ParsedCall(
        model=fields.modelVersion or None,
        usage=Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached, reasoning_tokens=thoughts),
        provenance=REPORTED, response_id=fields.responseId or None,
        usage_json=str(fields.usageMetadata, "utf-8"),
    )  # fmt: skip


class GenerateContent:
    api = "gemini.generate"

    def matches(self, method: str, path: str) -> bool:
        return path.endswith((":generateContent", ":streamGenerateContent"))

    def request_from_path(self, path: str) -> RequestInfo:
        return request_from_path(path)

    def parse_request(self, body: bytes) -> RequestInfo:
        # The body names neither the model nor streaming: both are in the path (`request_from_path`).
        return RequestInfo()

    def parse(self, body: bytes) -> ParsedCall:
        """A response object, or the JSON array a stream without ``alt=sse`` sends."""
        if body[:16].lstrip().startswith((b"data:", b":")):
            # An alt=sse body read whole (a client that did not stream the response).
            stream = GenerateStream()
            stream.feed(body)
            stream.feed(b"\n\n")  # a last event without its blank line
            return stream.finish(StreamOutcome.COMPLETE)
        fast = fast_parse(body)
        if fast is not None:
            return fast
        # Generate responses carry text and base64 media, not megabytes of floats: a whole parse is
        # exact and cheap (strings decode at hundreds of MB/s).
        obj = loads(body)
        chunks = _Chunks()
        if type(obj) is dict:
            chunks.add(obj)
            return chunks.call(stream=False)
        if type(obj) is list:
            for chunk in obj:
                chunks.add(chunk)
            return chunks.call(stream=True)
        return ParsedCall(flags=frozenset({Flag.UNPARSED}))

    def stream(self) -> GenerateStream:
        return GenerateStream()


# -- embeddings ------------------------------------------------------------------------------------------

EMBED_USAGE = UsageMap(input=("promptTokenCount",), output=("candidatesTokenCount",), total="totalTokenCount")
"""An embedding generates no tokens: output is 0 by definition once the input is reported."""

_decoder = json.JSONDecoder()


def _vertex_predict_tokens(body: bytes) -> tuple[int | None, set[str]]:
    """The sum of ``predictions[].embeddings.statistics.token_count`` of a Vertex ``:predict`` body.

    https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/text-embeddings-api (the
    response: ``statistics.token_count`` per instance, ``truncated``). Scanned, not parsed: the body
    is mostly floats. Every prediction must report its count, else the sum is unknown.
    """
    flags: set[str] = set()
    total = 0
    found = 0
    for key in (b'"token_count"', b'"tokenCount"'):
        at = body.find(key)
        while at >= 0:
            i = at + len(key)
            colon = body.find(b":", i, i + 16)
            if colon >= 0 and not body[i:colon].strip():
                try:
                    value, _ = _decoder.raw_decode(body[colon + 1 : colon + 64].lstrip().decode("utf-8", "replace"))
                except ValueError:
                    value = None
                if not is_count(value):
                    flags.add(Flag.INVALID_VALUE)
                    return None, flags
                total += value
                found += 1
            at = body.find(key, i)
    predictions = body.count(b'"embeddings"')
    if found == 0 or found != predictions:
        return None, flags
    return total, flags


class Embed:
    """``:embedContent`` and ``:batchEmbedContents`` (Gemini API and Vertex), and Vertex ``:predict`` for
    Google's text-embedding models.

    - Vertex ``:embedContent`` / ``:batchEmbedContents`` answer with ``usageMetadata``
      (https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest/v1/projects.locations.publishers.models/embedContent).
    - The Gemini API's responses (https://ai.google.dev/api/embeddings) carried no usage for a long
      time; newer ones add ``usageMetadata: {promptTokenCount, promptTokenDetails}``. When there is
      none the usage is missing, never 0: enrichment counts the input.
    - Vertex ``:predict`` reports ``statistics.token_count`` per prediction; their sum is the input.
    """

    api = "gemini.embed"

    def matches(self, method: str, path: str) -> bool:
        if path.endswith((":embedContent", ":batchEmbedContents")):
            return True
        # :predict serves every Vertex model (Imagen, custom endpoints): only Google's embedders here.
        return path.endswith(":predict") and "/publishers/google/models/" in path and "embedding" in path

    def request_from_path(self, path: str) -> RequestInfo:
        return request_from_path(path)

    def parse_request(self, body: bytes) -> RequestInfo:
        return RequestInfo()

    def parse(self, body: bytes) -> ParsedCall:
        raw = json_value(body, "usageMetadata")
        if type(raw) is dict:
            # Filling the absent output count only for the arithmetic; the raw usage stays as sent.
            usage, provenance, flags = usage_from({"candidatesTokenCount": 0, **raw}, EMBED_USAGE)
            return ParsedCall(usage=usage, provenance=provenance, raw_usage=raw, flags=frozenset(flags))
        if raw is not None:
            return ParsedCall(raw_usage=raw, flags=frozenset({Flag.INVALID_VALUE}))
        if b'"predictions"' in body:
            tokens, flags = _vertex_predict_tokens(body)
            if tokens is not None:
                usage = Usage(input_tokens=tokens, output_tokens=0)
                provenance = Provenance(input=Source.REPORTED, output=Source.REPORTED)
                return ParsedCall(
                    usage=usage, provenance=provenance, raw_usage={"token_count": tokens}, flags=frozenset(flags)
                )
            return ParsedCall(flags=frozenset(flags))
        return ParsedCall()

    def stream(self) -> WholeBody:
        return WholeBody(self)


GENERATE = GenerateContent()
EMBED = Embed()


# -- the path ------------------------------------------------------------------------------------------


def model_from_path(path: str) -> str | None:
    """The model a Gemini or Vertex request path names, e.g. ``gemini-2.5-flash``.

    ``/v1beta/models/gemini-2.5-flash:generateContent`` and
    ``/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash-001:streamGenerateContent``
    give the name after ``models/``; a tuned model (``/v1beta/tunedModels/my-model:generateContent``)
    gives ``tunedModels/my-model``. A Vertex endpoint (``…/endpoints/123:generateContent``) names no
    model: None.
    """
    path = path.split("?", 1)[0]
    colon = path.rfind(":")
    if colon < 0:
        return None
    head = path[:colon]
    slash = head.rfind("/")
    name, parent = head[slash + 1 :], head[:slash]
    if not name:
        return None
    if parent.endswith("/tunedModels") or parent == "tunedModels":
        return f"tunedModels/{name}"
    if parent.endswith("/models") or parent == "models":
        return name
    return None


def request_from_path(path: str) -> RequestInfo:
    """Model and stream flag of a Gemini request, which only its path states."""
    return RequestInfo(model=model_from_path(path), stream=path.split("?", 1)[0].endswith(":streamGenerateContent"))


__all__ = ["EMBED", "GENERATE", "SUFFIXES", "USAGE", "model_from_path", "request_from_path", "usage_from"]
