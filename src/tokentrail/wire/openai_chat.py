"""OpenAI Chat Completions (``POST …/chat/completions``) and legacy Completions (``…/completions``).

Served the same way by OpenAI, Azure OpenAI, OpenRouter, vLLM, Ollama's ``/v1``, LM Studio and every
OpenAI-compatible server, on any host. Usage shape:
https://platform.openai.com/docs/api-reference/chat/object#chat/object-usage

Stream quirks:
- usage arrives only when the request sets ``stream_options.include_usage``; it is then a last chunk
  with ``"choices": []``, and every earlier chunk carries ``"usage": null``
  (https://platform.openai.com/docs/api-reference/chat/streaming).
- vLLM with ``continuous_usage_stats`` sends cumulative usage on every chunk: the last one wins, never
  the sum (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html).
- the stream ends with ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec.structs import replace

from tokentrail.records import Flag
from tokentrail.usage import REPORTED, Usage
from tokentrail.wire._base import (
    SMALL_BODY,
    UNPARSED,
    Count,
    IdModelUsage,
    ParsedCall,
    RequestInfo,
    StreamOutcome,
    UsageMap,
    WholeBody,
    loads,
    parsed,
    request_info,
    top_level,
)
from tokentrail.wire.sse import SseDecoder

USAGE = UsageMap(
    input=("prompt_tokens",),
    output=("completion_tokens",),
    cache_read=("prompt_tokens_details.cached_tokens",),
    # OpenRouter reports cache writes beside cache reads, both inside prompt_tokens
    # (https://openrouter.ai/docs/use-cases/usage-accounting); OpenAI itself never sends it.
    cache_write=("prompt_tokens_details.cache_write_tokens",),
    reasoning=("completion_tokens_details.reasoning_tokens",),
    total="total_tokens",
)


def has_object(data: bytes, needle: bytes) -> bool:
    """True when ``"key": {`` occurs in ``data`` (``needle`` is the quoted key); cheap, no parse."""
    at = data.find(needle)
    while at >= 0:
        i = at + len(needle)
        rest = data[i : i + 8].lstrip()
        if rest.startswith(b":") and rest[1:].lstrip().startswith(b"{"):
            return True
        at = data.find(needle, i)
    return False


def _stream_usage(chunk: dict[str, Any]) -> Any:
    """A chunk's usage: ``usage``, else Groq's ``x_groq.usage`` (https://console.groq.com/docs/api-reference)."""
    usage = chunk.get("usage")
    if type(usage) is dict:
        return usage
    groq = chunk.get("x_groq")
    if type(groq) is dict and type(groq.get("usage")) is dict:
        return groq["usage"]
    return None


def refine(result: ParsedCall, provider: str) -> ParsedCall:
    """Re-read usage with the quirks of OpenAI-compatible servers (DeepSeek, xAI, Perplexity, Voyage…)."""
    raw = result.raw_usage
    if type(raw) is dict:
        prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
        # The common case, read as OpenAI means it: the total adds up and no variant's keys appear.
        if (
            type(prompt) is int
            and type(completion) is int
            and raw.get("total_tokens") == prompt + completion
            and "prompt_cache_hit_tokens" not in raw
            and "reasoning_tokens" not in raw
        ):
            return result
    from tokentrail.wire import openai_compat  # it imports this module

    return openai_compat.refine(result, provider, None)


def message_text(message: Any) -> str:
    """The text a chat message (or a stream delta) generated: content, refusal, tool-call names and
    arguments, legacy ``text``."""
    if type(message) is not dict:
        return ""
    parts = [message.get("content"), message.get("refusal"), message.get("text")]
    for call in message.get("tool_calls") or ():
        function = call.get("function") if type(call) is dict else None
        if type(function) is dict:
            parts += [function.get("name"), function.get("arguments")]
    return "".join(p for p in parts if type(p) is str)


def _choices_text(obj: Any) -> str:
    if type(obj) is not dict:
        return ""
    out = []
    for choice in obj.get("choices") or ():
        if type(choice) is dict:
            out.append(message_text(choice.get("message") or choice.get("delta") or choice))
    return "".join(out)


def _body_text(body: bytes) -> Callable[[], str | None]:
    return lambda: _choices_text(loads(body))


# -- the fast lane: OpenAI's own usage shape, decoded and checked in C -----------------------------


class _PromptDetails(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    cached_tokens: Count | None = None
    cache_write_tokens: Count | None = None
    audio_tokens: Count | None = None


class _CompletionDetails(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    reasoning_tokens: Count | None = None
    audio_tokens: Count | None = None
    accepted_prediction_tokens: Count | None = None
    rejected_prediction_tokens: Count | None = None


class _Usage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Exactly the keys OpenAI documents; any other (a server's variant) takes the general way."""

    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


_decode_body = msgspec.json.Decoder(IdModelUsage).decode
_decode_usage = msgspec.json.Decoder(_Usage).decode
_decode_raw = msgspec.json.Decoder().decode


def fast_usage(raw: bytes) -> Usage | None:
    """The counts of a usage object in OpenAI's documented shape whose counts add up (no flag to
    raise), from its JSON; ``None`` for anything else, which `parsed` reads instead."""
    if not raw:  # no usage key at all
        return None
    try:
        usage = _decode_usage(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    inp, out = usage.prompt_tokens, usage.completion_tokens
    prompt, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    read = write = reasoning = None
    if prompt is not None:
        read, write = prompt.cached_tokens, prompt.cache_write_tokens
    if completion is not None:
        reasoning = completion.reasoning_tokens
    if (usage.total_tokens is not None and usage.total_tokens != inp + out) or (read or 0) + (write or 0) > inp \
            or (reasoning or 0) > out:  # fmt: skip
        return None
    return Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write,
                 reasoning_tokens=reasoning)  # fmt: skip


def fast_parse(body: bytes) -> ParsedCall | None:
    """`ChatCompletions.parse` for a small body whose usage `fast_usage` reads; else ``None``."""
    if len(body) > SMALL_BODY:
        return None
    try:
        fields = _decode_body(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    usage = fast_usage(fields.usage) if fields.usage else None
    if usage is None:
        return None
    raw = fields.usage
    return ParsedCall(model=fields.model, usage=usage, provenance=REPORTED, response_id=fields.id,
                      usage_json=str(raw, "utf-8"))  # fmt: skip


class ChatStream:
    """Parses a chat.completion.chunk stream as it passes.

    Every event's data is kept by reference (no copy, no parse) so that the output text can be
    decoded later, off the caller's thread, if the stream carried no usage: up to `KEEP` bytes, so
    that an endless stream's memory stays bounded (past it, a count of its output is a floor).
    """

    __slots__ = ("_done", "_error", "_events", "_finished", "_id", "_kept", "_model", "_sse", "_usage")

    KEEP = 8 << 20

    def __init__(self) -> None:
        self._events: list[bytes] = []
        self._kept = 0
        """Bytes of event data kept; past `KEEP`, no more are."""
        self._sse = SseDecoder()
        self._model: object = None
        self._id: object = None
        self._usage: object = None
        self._done = False
        self._finished = False
        self._error = False

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            data = event.data
            if data == b"[DONE]":
                self._done = True
                continue
            if self._kept <= self.KEEP:
                self._events.append(data)
                self._kept += len(data)
            # Checked on the bytes, as `parse_stream` does, whether or not the event parses.
            if not self._finished and (b'"finish_reason":"' in data or b'"finish_reason": "' in data):
                self._finished = True
            # Azure's first chunk carries prompt_filter_results with "model": "" and "id": "", so
            # the model is taken from the first chunk that names one.
            if not self._model or has_object(data, b'"usage"') or b'"error"' in data:
                obj = loads(data)
                if not isinstance(obj, dict):
                    continue
                if not self._model:
                    self._model, self._id = obj.get("model") or None, obj.get("id") or None
                usage = _stream_usage(obj)
                if usage is not None:
                    self._usage = usage
                if "error" in obj:
                    self._error = True

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        complete = self._done or (outcome is StreamOutcome.COMPLETE and self._finished and not self._error)
        events = self._events
        self._events = []
        # Past KEEP, the text kept is the start of the output: counted, it is a floor.
        floor = {Flag.COUNT_FLOOR} if self._kept > self.KEEP and self._usage is None else None
        return parsed(self._usage, USAGE, model=self._model, response_id=self._id, complete=complete,
                      extra_flags=floor, output_text=lambda: "".join(_choices_text(loads(e)) for e in events))  # fmt: skip


def parse_stream(data: bytes, outcome: StreamOutcome) -> ParsedCall | None:
    """A whole stream held in memory, parsed at once: the result `ChatStream` gives for the same bytes,
    for a fraction of the work (substring searches, and a decode of only the events that name the
    model or carry the last usage). None when the stream needs the general decoder: CR line ends, an
    event it reads that is not one ``data: `` line of a JSON object, an error event in a stream
    without ``[DONE]``.

    Only the events it reads are checked for the common framing (one ``data: `` line per event):
    the ones it skips change nothing `ChatStream` would read (it, too, reads only the data of events
    up to the first that names a model, the usage, ``[DONE]`` and ``finish_reason``), and checking
    the whole stream's framing cost two more passes over every byte."""
    common = _common_stream(data)
    if common is not None:
        return common
    if b"\r" in data:
        return None
    end = data.rfind(b"\n\n")
    head = data[:end] if end >= 0 else b""  # an event left without its blank line is dropped (SSE spec)
    # [DONE] as an event of its own (a blank line before it, or the stream's start, and one after).
    done = (
        data.endswith(b"\n\ndata: [DONE]\n\n") or data.startswith(b"data: [DONE]\n\n")
        or b"\n\ndata: [DONE]\n\n" in data
    )  # fmt: skip
    # Otherwise: an error event decides whether the stream is whole, and a [DONE] framed another way
    # (a named event, "data:[DONE]") would end it for ChatStream.
    if not done and (b'"error"' in data or b"[DONE]" in data):
        return None
    size = len(head)
    model: object = None
    response_id: object = None
    usage: object = None
    pos = 0
    while pos < size:  # ChatStream parses every event up to the first that names a model
        stop = head.find(b"\n\n", pos)
        stop = size if stop < 0 else stop
        if not _one_data_line(head, pos, stop):
            return None
        payload = head[pos + 6 : stop]
        pos = stop + 2
        if payload == b"[DONE]":
            continue
        try:
            event = _decode_chunk(payload)
        except (msgspec.ValidationError, msgspec.DecodeError):  # not a JSON object
            return None
        found = _chunk_usage(event)
        if found is not None:
            usage = found
        model, response_id = event.model or None, event.id or None
        if model:
            break
    at = size
    while (at := head.rfind(b'"usage"', pos, at)) >= 0:  # after those, the last usage wins (vLLM: every chunk)
        before = head.rfind(b"\n\n", 0, at)
        start = 0 if before < 0 else before + 2
        stop = head.find(b"\n\n", at)
        stop = size if stop < 0 else stop
        payload = head[start + 6 : stop]
        if head.startswith(b":{", at + 7) or has_object(payload, b'"usage"'):  # compact JSON first: cheaper
            if not _one_data_line(head, start, stop):
                return None
            raw = _usage_json(payload)
            if raw is not None:  # OpenAI's own shape: read in C by the fast lane below
                usage = raw
                break
            obj = loads(payload)
            if type(obj) is not dict:
                return None
            found = _stream_usage(obj)
            if found is not None:
                usage = found
                break
        at = start
    # rfind: the finishing chunk is at the end, and every chunk before it has "finish_reason":null.
    finished = head.rfind(b'"finish_reason":"') >= 0 or head.rfind(b'"finish_reason": "') >= 0
    complete = done or (outcome is StreamOutcome.COMPLETE and finished)

    def output_text() -> str | None:
        if not _common_framing(head):  # checked only now: the text is wanted when no usage came
            stream = ChatStream()
            stream.feed(data)
            result = stream.finish(outcome)
            return result.output_text() if result.output_text is not None else None
        events = (block[6:] for block in head.split(b"\n\n") if block and block != b"data: [DONE]")
        return "".join(_choices_text(loads(e)) for e in events)

    if type(usage) is msgspec.Raw:
        counts = fast_usage(usage) if complete else None
        if counts is not None:
            return ParsedCall(model=model if isinstance(model, str) else None, usage=counts, provenance=REPORTED,
                              complete=True, usage_json=str(usage, "utf-8"),
                              response_id=response_id if isinstance(response_id, str) else None)  # fmt: skip
        usage = _decode_raw(usage)
    return parsed(usage, USAGE, model=model, response_id=response_id, complete=complete, output_text=output_text)


_DONE_TAIL = b"\n\ndata: [DONE]\n\n"


def _common_stream(data: bytes) -> ParsedCall | None:
    """`parse_stream` of the stream OpenAI sends with ``include_usage``, or ``None`` for any other:
    each event one ``data: `` line, the first naming the model, the last before ``[DONE]`` carrying
    the usage in OpenAI's own shape. Only those two events are read (about a third of the work of
    the general way, callgrind): with ``[DONE]`` the stream is whole whatever came between, and the
    last event's usage is the last usage. A ``\r`` in either ends a line in SSE, so either with one
    takes the general way."""
    if not data.endswith(_DONE_TAIL) or not data.startswith(b"data: {"):
        return None
    first_end = data.find(b"\n\n")
    if data.find(b"\n") != first_end:  # the first event is one line
        return None
    end = len(data) - len(_DONE_TAIL)
    start = data.rfind(b"\n\n", 0, end)  # the last event before [DONE] (maybe the first)
    start = 0 if start < 0 else start + 2
    if not data.startswith(b"data: ", start) or data.find(b"\n", start, end) >= 0:
        return None
    first, last = data[6:first_end], data[start + 6 : end]
    # ChatStream reads an event after the first only when it holds "usage": {… (or an error), so
    # a usage key spelled with escapes is not its usage.
    if b"\r" in first or b"\r" in last:
        return None
    if b'"usage":{' not in last and not has_object(last, b'"usage"'):  # compact JSON first: cheaper
        return None
    try:
        head, tail = _decode_body(first), _decode_body(last)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    counts = fast_usage(tail.usage) if head.model else None
    if counts is None:
        return None
    return ParsedCall(model=head.model, usage=counts, provenance=REPORTED, complete=True,
                      usage_json=str(tail.usage, "utf-8"), response_id=head.id or None)  # fmt: skip


def _one_data_line(head: bytes, start: int, stop: int) -> bool:
    """Whether the event ``head[start:stop]`` is a single ``data: `` line."""
    return head.startswith(b"data: ", start) and head.find(b"\n", start, stop) < 0


def _common_framing(head: bytes) -> bool:
    """Every event of ``head`` is one ``data: `` line: each newline belongs to a ``\\n\\ndata: `` between
    two of them. (Newlines counted as the length a removal takes off: one pass in C, 3× cheaper than
    ``bytes.count`` here.)"""
    if not head:
        return True
    return head.startswith(b"data: ") and len(head) - len(head.replace(b"\n", b"")) == 2 * head.count(b"\n\ndata: ")


class _Chunk(msgspec.Struct, gc=False):
    """What `parse_stream` reads of an event before the model is known; the rest is skipped unread."""

    id: Any = None
    model: Any = None
    usage: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    x_groq: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


def _chunk_usage(event: _Chunk) -> Any:
    """`_stream_usage` of a decoded `_Chunk`: its usage object, else Groq's ``x_groq.usage``."""
    if event.usage and memoryview(event.usage)[:1] == b"{":
        return _decode_raw(event.usage)
    if event.x_groq and memoryview(event.x_groq)[:1] == b"{":
        return _stream_usage({"x_groq": _decode_raw(event.x_groq)})
    return None


def _usage_json(event: bytes) -> msgspec.Raw | None:
    """The JSON of an event's ``usage`` object, when the event is an object with string-or-null
    ``id`` and ``model`` and a usage object; else ``None`` (read it in the general way)."""
    try:
        raw = _decode_body(event).usage
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return raw if raw and memoryview(raw)[:1] == b"{" else None


class ChatCompletions:
    api = "openai.chat"
    _suffix = "/chat/completions"

    def parse_stream(self, data: bytes, outcome: StreamOutcome) -> ParsedCall | None:
        return parse_stream(data, outcome)

    def refine(self, result: ParsedCall, provider: str) -> ParsedCall:
        return refine(result, provider)

    def matches(self, method: str, path: str) -> bool:
        return path.endswith(self._suffix)

    parse_request = staticmethod(request_info)  # not a method calling it: one call a record less

    def parse(self, body: bytes) -> ParsedCall:
        return fast_parse(body) or self.parse_general(body)

    def parse_general(self, body: bytes) -> ParsedCall:
        """`parse` for every body; `fast_parse` gives the same result for the common ones."""
        fields = top_level(body, "usage", "model", "id")
        if not fields and type(loads(body)) is not dict:  # not JSON, or not an object: nothing to count
            return UNPARSED
        return parsed(fields.get("usage"), USAGE, model=fields.get("model"), response_id=fields.get("id"),
                      output_text=_body_text(body))  # fmt: skip

    def stream(self) -> ChatStream:
        return ChatStream()


class Completions(ChatCompletions):
    """The legacy text completions endpoint: the same usage shape, ``choices[].text`` instead of deltas."""

    api = "openai.completions"
    _suffix = "/completions"

    def matches(self, method: str, path: str) -> bool:
        return path.endswith("/completions") and not path.endswith("/chat/completions")


class Embeddings:
    """``POST …/embeddings``. Output is 0 by definition: an embedding generates no tokens."""

    api = "openai.embeddings"
    _usage = UsageMap(input=("prompt_tokens",), output=("completion_tokens",), total="total_tokens")

    def refine(self, result: ParsedCall, provider: str) -> ParsedCall:
        from tokentrail.wire import openai_compat

        return openai_compat.refine(result, provider, self.api)

    def matches(self, method: str, path: str) -> bool:
        return path.endswith("/embeddings")

    def parse_request(self, body: bytes) -> RequestInfo:
        return request_info(body)

    def parse(self, body: bytes) -> ParsedCall:
        fields = top_level(body, "usage", "model")
        raw, model = fields.get("usage"), fields.get("model")
        if isinstance(raw, dict) and "completion_tokens" not in raw:
            # Embeddings report no output count because there is none; 0 is the fact, not a guess.
            result = parsed({**raw, "completion_tokens": 0}, self._usage, model=model)
            return replace(result, raw_usage=raw)
        # Without usage, the input is counted from the request; the output is the empty text.
        return parsed(raw, self._usage, model=model, output_text=_no_text)

    def stream(self) -> WholeBody:
        return WholeBody(self)


def _no_text() -> str:
    return ""


SUFFIXES: tuple[str, ...] = ("/chat/completions", "/completions", "/embeddings")

CHAT = ChatCompletions()
COMPLETIONS = Completions()
EMBEDDINGS = Embeddings()
