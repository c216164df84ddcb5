"""Anthropic Messages (``POST …/v1/messages``), served by Anthropic and by Anthropic-compatible gateways.

Usage shape (https://docs.anthropic.com/en/api/messages, the ``usage`` object; field docs in
anthropics/anthropic-sdk-python ``src/anthropic/types/usage.py``):

- ``input_tokens`` is the *uncached* input only. "Total input tokens in a request is the summation of
  input_tokens, cache_creation_input_tokens, and cache_read_input_tokens" (the ``usage`` field docs,
  e.g. anthropic-java ``RawMessageDeltaEvent.usage``), so tokentrail's input is that sum.
- ``cache_creation`` splits ``cache_creation_input_tokens`` by TTL (``ephemeral_5m_input_tokens``,
  ``ephemeral_1h_input_tokens``): parts of the cache write, checked, kept raw.
- ``output_tokens`` includes extended thinking. Since 2026 the API also reports
  ``output_tokens_details.thinking_tokens`` ("how many of the billed output tokens were extended
  thinking … When streaming, the breakdown appears only on the final message_delta event" — Claude
  Platform release notes; ``src/anthropic/types/output_tokens_details.py``: "Always ≤ output_tokens").
  That is tokentrail's ``reasoning_tokens``; when absent (older API versions, gateways) it stays None:
  thinking is then inside ``output_tokens`` but not reported apart.
- ``server_tool_use`` (web search / fetch request counts), ``service_tier``, ``inference_geo`` are not
  token counts: kept in the raw usage only.
- No provider total is reported, so there is nothing to check ``total_tokens`` against.

The body functions (`usage_from`, `message_call`) and the event handler (`MessagesStream.event`) take
decoded objects / event payloads, so Bedrock's and Vertex's Anthropic-shaped bodies can reuse them.

Output text (counted when no output count came, `ParsedCall.output_text`): what the model generated,
block by block in order: ``text``, ``thinking`` (billed inside ``output_tokens``), and a tool call's
name plus its input as compact JSON (``tool_use``, ``server_tool_use``, ``mcp_tool_use``), the rule
`tokentrail.sim.anthropic` counts by. ``redacted_thinking`` is encrypted, and Claude 4 models return
thinking summarized while billing all of it: the text is then a floor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec.structs import replace

from tokentrail.records import Flag
from tokentrail.usage import Provenance, Source, Usage
from tokentrail.wire._base import (
    REPORTED,
    Count,
    IdModelUsage,
    ParsedCall,
    RequestInfo,
    StreamOutcome,
    UsageMap,
    compact_json,
    is_count,
    json_value,
    loads,
    read_usage,
    request_info,
)
from tokentrail.wire.sse import SseDecoder

SUFFIXES: tuple[str, ...] = ("/v1/messages",)
"""Path endings this module can own (``…/v1/messages/count_tokens`` and ``…/batches`` do not end so)."""

USAGE = UsageMap(
    input=("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"),
    output=("output_tokens",),
    cache_read=("cache_read_input_tokens",),
    cache_write=("cache_creation_input_tokens",),
    reasoning=("output_tokens_details.thinking_tokens",),
)

_TTL_PARTS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


def usage_from(raw: Any) -> tuple[Usage, Provenance, set[str]]:
    """Normalize one Anthropic ``usage`` object; validate every number, never raise.

    Returns the usage, its provenance (reported for what is known) and the flags raised.
    """
    usage, provenance, flags = read_usage(raw, USAGE)
    if type(raw) is not dict:
        return usage, provenance, flags
    if raw.get("input_tokens") is None and usage.input_tokens is not None:
        # Cache counts alone are parts of the input, not the whole: without input_tokens the
        # whole is unknown.
        usage = replace(usage, input_tokens=None)
        provenance = replace(provenance, input=Source.MISSING)
    ttl = raw.get("cache_creation")
    if ttl is not None:
        parts = [ttl.get(k) for k in _TTL_PARTS] if type(ttl) is dict else [ttl]
        if not all(p is None or is_count(p) for p in parts):
            flags.add(Flag.INVALID_VALUE)
        elif usage.cache_write_tokens is not None and sum(p or 0 for p in parts) > usage.cache_write_tokens:
            flags.add(Flag.PARTS_EXCEED_WHOLE)
    return usage, provenance, flags


_TOOL_BLOCKS = ("tool_use", "server_tool_use", "mcp_tool_use")


def _block_text(block: Any, *, streamed: bool = False) -> str:
    """The generated text of one content block, or of a stream's ``content_block_start``
    (``streamed``: a tool call's input is then the ``{}`` placeholder, its JSON comes in deltas)."""
    if type(block) is not dict:
        return ""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
    elif kind == "thinking":
        text = block.get("thinking")
    elif kind in _TOOL_BLOCKS:
        name = block.get("name")
        name = name if type(name) is str else ""
        return name if streamed or "input" not in block else name + compact_json(block["input"])
    else:
        return ""
    return text if type(text) is str else ""


def content_text(content: Any) -> str:
    """The generated text of a Message's ``content`` blocks (see the module docstring)."""
    if type(content) is not list:
        return ""
    return "".join([_block_text(block) for block in content])


_DELTA_FIELDS = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


def events_text(events: list[bytes]) -> str:
    """The generated text of a stream's ``content_block_start`` and ``content_block_delta`` payloads."""
    out: list[str] = []
    for data in events:
        obj = loads(data)
        if type(obj) is not dict:
            continue
        delta = obj.get("delta")
        if type(delta) is dict:
            field = _DELTA_FIELDS.get(delta.get("type"))  # type: ignore[arg-type]
            value = delta.get(field) if field is not None else None
            if type(value) is str:
                out.append(value)
        else:
            out.append(_block_text(obj.get("content_block"), streamed=True))
    return "".join(out)


def _call(
    raw_usage: Any,
    *,
    model: Any = None,
    response_id: Any = None,
    complete: bool = True,
    input_final: bool = False,
    extra_flags: set[str] | None = None,
    output_text: Callable[[], str | None] | None = None,
) -> ParsedCall:
    usage, provenance, flags = usage_from(raw_usage)
    if not complete:
        # Output seen before the cut is a floor, not the bill. The input counts of message_start are
        # final unless server tools re-sample (input_final says which).
        partial = Source.PARTIAL if provenance.output is Source.REPORTED else provenance.output
        if provenance.input is Source.REPORTED and not input_final:
            provenance = Provenance(input=Source.PARTIAL, output=partial)
        else:
            provenance = Provenance(input=provenance.input, output=partial)
        flags.add(Flag.STREAM_INCOMPLETE)
    if extra_flags:
        flags |= extra_flags
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


def message_call(message: Any) -> ParsedCall:
    """The `ParsedCall` of a decoded Message object (``{"id", "model", "usage", …}``)."""
    if type(message) is not dict:
        return ParsedCall(flags=frozenset({Flag.UNPARSED}))
    content = message.get("content")
    return _call(
        message.get("usage"),
        model=message.get("model"),
        response_id=message.get("id"),
        output_text=lambda: content_text(content),
    )


# -- the fast lane: Anthropic's own usage shape, decoded and checked in C -----------------------------


class _CacheCreation(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    ephemeral_5m_input_tokens: Count | None = None
    ephemeral_1h_input_tokens: Count | None = None


class _OutputDetails(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    thinking_tokens: Count | None = None


class _Usage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Exactly the keys Anthropic documents, the counts present; anything else takes the general way."""

    input_tokens: Count
    output_tokens: Count
    cache_creation_input_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None
    cache_creation: _CacheCreation | None = None
    output_tokens_details: _OutputDetails | None = None
    # Not token counts: kept in the raw usage only, whatever they hold.
    server_tool_use: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    service_tier: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    inference_geo: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_decode_body = msgspec.json.Decoder(IdModelUsage).decode
_decode_usage = msgspec.json.Decoder(_Usage).decode


def fast_parse(body: bytes) -> ParsedCall | None:
    """`message_call` of a Message body whose usage is in Anthropic's documented shape and raises no
    flag, read in C without building the rest of the body; ``None`` for anything else, which
    `message_call` reads instead. 1-hour cache writes take the general way: their price needs the
    raw usage object."""
    try:
        fields = _decode_body(body)
        usage = _decode_usage(fields.usage) if fields.usage else None
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if usage is None:
        return None
    read, write, out = usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.output_tokens
    ttl, details = usage.cache_creation, usage.output_tokens_details
    if ttl is not None and (
        ttl.ephemeral_1h_input_tokens
        or (write is not None and (ttl.ephemeral_5m_input_tokens or 0) + (ttl.ephemeral_1h_input_tokens or 0) > write)
    ):
        return None
    thinking = None if details is None else details.thinking_tokens
    if thinking is not None and thinking > out:
        return None
    return ParsedCall(
        model=fields.model or None,
        usage=Usage(input_tokens=usage.input_tokens + (read or 0) + (write or 0), output_tokens=out,
                    cache_read_tokens=read, cache_write_tokens=write, reasoning_tokens=thinking),
        provenance=REPORTED, response_id=fields.id or None, usage_json=str(fields.usage, "utf-8"),
    )  # fmt: skip


class MessagesStream:
    """Parses a Messages event stream as it passes.

    Usage is split across events and merged by field, later values winning — the same merge the
    SDK does (anthropics/anthropic-sdk-python ``src/anthropic/lib/streaming/_messages.py``,
    ``accumulate_event``; event flow: https://docs.anthropic.com/en/docs/build-with-claude/streaming):

    - ``message_start`` carries ``message.usage``: the input side (final for a plain request) and a
      provisional ``output_tokens`` (often 1).
    - ``message_delta`` carries ``usage`` whose counts are *cumulative* ("The cumulative number of
      output tokens which were used", ``src/anthropic/types/message_delta_usage.py``): never summed.
      Since 2025 it may repeat ``input_tokens`` and the cache counts, which then replace the start's
      (with server tools the input grows while the server re-samples); a ``null`` there means "not
      sent", as in the SDK. ``output_tokens_details`` comes only on the final ``message_delta``.
    - ``message_stop`` ends the message; an ``error`` event (e.g. ``overloaded_error``) may arrive
      mid-stream instead (https://docs.anthropic.com/en/api/errors).

    Only ``message_start`` and ``message_delta`` are decoded; every other event is matched by name.
    The payloads of ``content_block_start`` and ``content_block_delta`` are kept by reference (no
    copy, no parse): their text is decoded later, off the caller's thread, if no output count came.
    """

    __slots__ = (
        "_blocks",
        "_error",
        "_flags",
        "_id",
        "_model",
        "_server_tools",
        "_sse",
        "_started",
        "_stop_reason",
        "_stopped",
        "_usage",
    )

    def __init__(self) -> None:
        self._sse = SseDecoder()
        self._blocks: list[bytes] = []
        self._model: object = None
        self._id: object = None
        self._usage: Any = None
        self._flags: set[str] = set()
        self._started = False
        self._stopped = False
        self._stop_reason = False
        self._error = False
        self._server_tools = False

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            self.event(event.event, event.data)

    def event(self, name: str, data: bytes) -> None:
        """One event: its SSE name (``"message"`` when unnamed) and its JSON payload."""
        if name == "content_block_delta":
            self._blocks.append(data)
            return
        if name == "ping":
            return
        if name == "message" or not name:
            # Gateways (and Bedrock's event stream) may drop the SSE name; "type" leads the payload.
            kind = json_value(data, "type", first=True)
            name = kind if isinstance(kind, str) else ""
            if name == "content_block_delta":
                self._blocks.append(data)
                return
        if name == "message_start":
            obj = loads(data)
            message = obj.get("message") if type(obj) is dict else None
            if type(message) is not dict:
                return
            self._started = True
            self._model = message.get("model") or self._model
            self._id = message.get("id") or self._id
            usage = message.get("usage")
            if type(usage) is dict:
                self._usage = dict(usage)
            elif usage is not None:
                self._usage = usage  # kept raw, flagged even if a later delta brings an object
                self._flags.add(Flag.INVALID_VALUE)
        elif name == "message_delta":
            obj = loads(data)
            usage = obj.get("usage") if type(obj) is dict else None
            if type(usage) is dict:
                known = {k: v for k, v in usage.items() if v is not None}
                if type(self._usage) is dict:
                    self._usage.update(known)
                else:
                    self._usage = known
            elif usage is not None:
                self._flags.add(Flag.INVALID_VALUE)
            delta = obj.get("delta") if type(obj) is dict else None
            if type(delta) is dict and delta.get("stop_reason"):
                self._stop_reason = True
        elif name == "message_stop":
            self._stopped = True
        elif name == "error":
            self._error = True
        elif name == "content_block_start":
            self._blocks.append(data)
            if b"server_tool_use" in data or b"mcp_tool_use" in data:
                # A tool run on Anthropic's side: the model is sampled again with its result, so the
                # input counts of message_start are not final until the last message_delta.
                self._server_tools = True

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        # message_stop is the final event, but the message_delta carrying the stop_reason already
        # holds the final usage: a gateway that drops message_stop, or a client that stops reading
        # there (litellm never reads message_stop nor closes the response) has the whole bill. With
        # server tools a stop can still be followed by more, so there only a clean end counts.
        final = bool(self._stop_reason) and (outcome is StreamOutcome.COMPLETE or not self._server_tools)
        complete = not self._error and (self._stopped or (self._started and final))
        blocks = self._blocks
        return _call(
            self._usage,
            model=self._model,
            response_id=self._id,
            complete=complete,
            input_final=self._started and not self._server_tools,
            extra_flags=self._flags,
            output_text=lambda: events_text(blocks),
        )


class Messages:
    api = "anthropic.messages"
    terminal = b"event: message_"
    """The start of the lines of the events that may end the stream (see `final_event`). Only this
    family has one: the check costs ~0.5 µs a chunk, and the OpenAI SDKs read every stream to its
    end, where litellm stops reading Anthropic streams at the stop reason and leaves them open."""

    def final_event(self, event: bytes, chunks: list[bytes] | None) -> bool:
        """Whether a stream's ``event`` (its bytes, from the ``event:`` line) ends the message:
        ``message_stop``, or the ``message_delta`` with the stop reason, which holds the final usage
        (litellm reads no further and leaves the response open). With server tools the model may be
        sampled again after a stop, so there only ``message_stop`` ends it (as `MessagesStream`)."""
        if event.startswith(b"event: message_stop"):
            return True
        if not event.startswith(b"event: message_delta") or b'"stop_reason":"' not in event.replace(b" ", b""):
            return False
        return chunks is not None and not any(b"server_tool_use" in c or b"mcp_tool_use" in c for c in chunks)

    def matches(self, method: str, path: str) -> bool:
        return path.endswith("/v1/messages")

    def parse_request(self, body: bytes) -> RequestInfo:
        return request_info(body)

    def parse(self, body: bytes) -> ParsedCall:
        if body[:16].lstrip().startswith((b"event:", b"data:", b":")):
            # An event stream read whole (a client that did not stream the response).
            stream = MessagesStream()
            stream.feed(body)
            stream.feed(b"\n\n")  # a last event without its blank line
            return stream.finish(StreamOutcome.COMPLETE)
        # Messages bodies hold text, not megabytes of floats: a whole parse is cheap and exact
        # whatever the key order (a tool_use input may itself have "model" or "usage" keys).
        return fast_parse(body) or message_call(loads(body))

    def stream(self) -> MessagesStream:
        return MessagesStream()


MESSAGES = Messages()
