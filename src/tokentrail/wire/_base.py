"""What every API family's parser provides, and the helpers they share."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Protocol

import msgspec

from tokentrail.records import Flag
from tokentrail.usage import EMPTY, MISSING, REPORTED, Provenance, Source, Usage


class StreamOutcome(StrEnum):
    """How a streamed response body ended."""

    COMPLETE = "complete"
    """The body was read to its end."""
    CLOSED_EARLY = "closed_early"
    """The caller closed it before the end."""
    BROKEN = "broken"
    """Reading it raised (connection dropped, timeout)."""
    ABANDONED = "abandoned"
    """It was garbage-collected without being read to the end or closed."""


MAX_COUNT = 10**9
"""The largest token count one call can report: a thousand times the longest context window. A
larger one is a server's bug; kept raw, it would overflow the costs and sums the ledger stores."""
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
"""A token count as the fast lanes accept it (msgspec checks it in C): see `is_count`."""


def is_count(value: Any) -> bool:
    """Whether ``value`` is a token count: an integer from 0 to `MAX_COUNT` (not a bool, not 3.0)."""
    return type(value) is int and 0 <= value <= MAX_COUNT  # bool is an int subclass, not the same type


class IdModelUsage(msgspec.Struct, gc=False):
    """What a fast lane reads of an OpenAI- or Anthropic-shaped body; the rest is skipped unread."""

    id: str | None = None
    model: str | None = None
    usage: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # a Raw cannot be in a union


class RequestInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the request body says."""

    model: str | None = None
    stream: bool = False


class ParsedCall(msgspec.Struct, frozen=True, kw_only=True, eq=False, gc=False):  # no cycles: see CallRecord
    """What a response body says about usage."""

    model: str | None = None
    usage: Usage = EMPTY
    provenance: Provenance = MISSING
    raw_usage: Any = None
    """The provider's usage object as decoded; ``None`` when a fast lane kept only `usage_json`."""
    flags: frozenset[str] = frozenset()
    response_id: str | None = None
    complete: bool = True
    """False when a stream ended before its final event."""
    usage_json: str | None = None
    """The usage object's JSON as received, set only when a fast lane read it in the family's
    documented shape and checked it: no server quirk to look for (`refine`), no provider-reported
    cost in it. Such a lane leaves `raw_usage` ``None`` (decoding it again cost ~8,000 instructions
    a call, for a dict the ledger never needs); `usage_object` decodes it when asked."""
    output_text: Callable[[], str | None] | None = None
    """Returns the generated text (content, tool-call names and arguments), decoded only when asked:
    the pipeline counts it when the provider reported no output usage."""

    def usage_object(self) -> Any:
        """The provider's usage object: `raw_usage`, else `usage_json` decoded."""
        if self.raw_usage is None and self.usage_json is not None:
            return json.loads(self.usage_json)
        return self.raw_usage

    def __eq__(self, other: object) -> bool:  # every field but output_text (a closure); the usage object decoded
        if type(other) is not ParsedCall:
            return NotImplemented
        return _comparable(self) == _comparable(other)

    __hash__ = None  # type: ignore[assignment]


def _comparable(call: ParsedCall) -> tuple[Any, ...]:
    return (call.model, call.usage, call.provenance, call.usage_object(), call.flags, call.response_id, call.complete)


class StreamParser(Protocol):
    """Consumes a streamed body chunk by chunk, on the caller's thread: keep `feed` cheap."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self, outcome: StreamOutcome) -> ParsedCall: ...


class WireParser(Protocol):
    """One API family. `matches` is called for every request: it must be cheap and allocate nothing."""

    api: str

    def matches(self, method: str, path: str) -> bool: ...

    def parse_request(self, body: bytes) -> RequestInfo: ...

    def parse(self, body: bytes) -> ParsedCall: ...

    def stream(self) -> StreamParser: ...


# -- usage as data -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageMap:
    """Where a family puts each count: destination → paths (dotted) that are summed.

    Several paths for one destination express inclusive buckets, e.g. Anthropic's input is
    ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``.
    """

    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    cache_read: tuple[str, ...] = ()
    cache_write: tuple[str, ...] = ()
    reasoning: tuple[str, ...] = ()
    total: str | None = None
    """The provider's own total, checked against input + output."""
    compiled: tuple[tuple[tuple[str, ...], ...], ...] = field(init=False, repr=False, compare=False)
    """The five destinations as tuples of split paths, computed once (`read_usage` runs per call)."""

    def __post_init__(self) -> None:
        destinations = (self.input, self.output, self.cache_read, self.cache_write, self.reasoning)
        compiled = tuple(tuple(_parts(p) for p in paths) for paths in destinations)
        object.__setattr__(self, "compiled", compiled)


@functools.lru_cache(maxsize=512)
def _parts(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _lookup(raw: dict[str, Any], path: str) -> Any:
    node: Any = raw
    for part in _parts(path):
        # JSON objects decode to dict: a plain type check is much cheaper than the Mapping ABC.
        if type(node) is not dict:
            return None
        node = node.get(part)
    return node


def _read(raw: dict[str, Any], paths: tuple[tuple[str, ...], ...], flags: set[str]) -> int | None:
    total: int | None = None
    for path in paths:
        node: Any = raw
        for key in path:
            # JSON objects decode to dict: a plain type check is much cheaper than the Mapping ABC.
            node = node.get(key) if type(node) is dict else None
        if node is None:
            continue
        if type(node) is not int or not 0 <= node <= MAX_COUNT:  # `is_count`, inlined
            flags.add(Flag.INVALID_VALUE)
            return None
        total = node if total is None else total + node
    return total


_PROVENANCES = {
    (i, o, s): Provenance(input=s if i else Source.MISSING, output=s if o else Source.MISSING)
    for i in (True, False)
    for o in (True, False)
    for s in Source
}


def read_usage(raw: Any, spec: UsageMap, source: Source = Source.REPORTED) -> tuple[Usage, Provenance, set[str]]:
    """Normalize a provider's usage mapping with ``spec``; validate every number, never raise.

    Returns the usage, its provenance and the flags raised (`Flag` values). Runs once per call in
    the pipeline, so it is written for speed: paths are split once per spec, values checked inline.
    """
    flags: set[str] = set()
    if type(raw) is not dict:
        if raw is not None:
            flags.add(Flag.INVALID_VALUE)
        return Usage(), MISSING, flags
    to_input, to_output, to_read, to_write, to_reasoning = spec.compiled
    inp, out = _read(raw, to_input, flags), _read(raw, to_output, flags)
    read, write, reasoning = _read(raw, to_read, flags), _read(raw, to_write, flags), _read(raw, to_reasoning, flags)
    if (inp is not None and (read or 0) + (write or 0) > inp) or (out is not None and (reasoning or 0) > out):
        flags.add(Flag.PARTS_EXCEED_WHOLE)
    if spec.total is not None:
        reported_total = _lookup(raw, spec.total)
        if reported_total is not None:
            if type(reported_total) is not int or reported_total < 0:  # a total may pass MAX_COUNT
                flags.add(Flag.INVALID_VALUE)
            elif inp is not None and out is not None and reported_total != inp + out:
                flags.add(Flag.TOTAL_MISMATCH)
    usage = Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=reasoning,
    )
    return usage, _PROVENANCES[inp is not None, out is not None, source], flags


# -- cheap JSON access -----------------------------------------------------------------------------


def json_value(body: bytes, key: str, *, first: bool = False) -> Any:
    """The value of the last (or ``first``) ``"key":`` in a JSON body, without parsing it all.

    Embedding responses carry megabytes of floats before their ``model`` and ``usage``; a full
    ``json.loads`` of those costs milliseconds. A quoted key cannot occur unescaped inside a JSON
    string, so a match is a real key (possibly of a nested object: parsers only ask for keys that
    their family puts at the top level, after any nested objects of the same name).
    """
    needle = b'"' + key.encode() + b'"'
    start, end = 0, len(body)
    while True:
        at = body.find(needle, start) if first else body.rfind(needle, 0, end)
        if at < 0:
            return None
        i = at + len(needle)
        while i < len(body) and body[i] in b" \t\r\n":
            i += 1
        if i < len(body) and body[i] == 58:  # ":"
            try:
                value, _ = _decoder.raw_decode(body[i + 1 :].lstrip().decode("utf-8", "replace"))
            except ValueError:
                return None
            return value
        start, end = at + len(needle), at


_decoder = json.JSONDecoder()

SMALL_BODY = 64 * 1024
"""Bodies up to this size are parsed whole; larger ones are scanned for the keys asked for."""


def top_level(body: bytes, *keys: str) -> dict[str, Any]:
    """The values of top-level ``keys`` in a JSON object body (missing keys are absent).

    Small bodies are parsed whole, which is exact whatever the key order (Azure sorts keys, so a
    tool call's ``id`` precedes the response's; a tool schema may have a property named ``model``):
    msgspec checks the whole document but builds only the values asked for, several times cheaper
    than ``json.loads``. Large bodies — embeddings with megabytes of floats, long prompts — are
    scanned with `json_value` instead: their top-level ``usage`` and ``model`` follow any nested
    namesakes, and ``id`` leads.
    """
    if len(body) <= SMALL_BODY:
        try:
            return _top_level_decoder(keys)(body)
        except ValueError:  # what msgspec refuses (NaN, UTF-16, not an object): as json.loads reads it
            obj = loads(body)
            if isinstance(obj, dict):
                return {k: obj[k] for k in keys if k in obj}
            return {}
    found = {}
    for key in keys:
        value = json_value(body, key, first=key == "id")
        if value is not None:
            found[key] = value
    return found


_top_level_decoders: dict[tuple[str, ...], Callable[[bytes], dict[str, Any]]] = {}


def _top_level_decoder(keys: tuple[str, ...]) -> Callable[[bytes], dict[str, Any]]:
    """A decoder of JSON objects that builds only ``keys``; raises ValueError for anything else."""
    decoder = _top_level_decoders.get(keys)
    if decoder is None:
        import msgspec

        names = [f"f{i}" for i in range(len(keys))]  # any JSON key works, even one that is no identifier
        fields = [(name, Any, msgspec.UNSET) for name in names]
        struct = msgspec.defstruct("TopLevel", fields, rename=dict(zip(names, keys, strict=True)))
        decode, astuple, unset = msgspec.json.Decoder(struct).decode, msgspec.structs.astuple, msgspec.UNSET

        def decoder(body: bytes) -> dict[str, Any]:
            return {k: v for k, v in zip(keys, astuple(decode(body)), strict=True) if v is not unset}

        _top_level_decoders[keys] = decoder
    return decoder


def loads(body: bytes) -> Any:
    """Parsed JSON, or ``None`` instead of raising.

    msgspec first, several times faster than ``json.loads``; the standard library for what msgspec
    refuses (``NaN``, UTF-16/32 bodies, which JSON allows), so the result is ``json.loads``'s.
    """
    global _decode_fast
    if _decode_fast is None:
        import msgspec

        _decode_fast = msgspec.json.decode
    try:
        return _decode_fast(body)
    except ValueError:
        pass
    try:
        # UTF-8 first: json.loads(bytes) sniffs the encoding in Python
        return _decode_json(body.decode())
    except ValueError:
        try:
            return json.loads(body)
        except ValueError:
            return None


_decode_fast: Callable[[bytes], Any] | None = None
_decode_json = json.JSONDecoder().decode


_decode_request = msgspec.json.Decoder(RequestInfo).decode
"""A request body decoded straight into its `RequestInfo`: a ``stream`` that is no bool (``null``)
fails it, and the general way reads it as not streamed, as before."""


def request_info(body: bytes) -> RequestInfo:
    """Model and stream flag of a JSON request body (shared by the OpenAI-shaped families)."""
    if not body:
        return RequestInfo()
    if len(body) <= SMALL_BODY:
        try:  # typed: built in C; any other shape (a model that is no string, NaN…) takes the general way
            return _decode_request(body)  # type: ignore[no-any-return]
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    fields = top_level(body, "model", "stream")
    model = fields.get("model")
    return request_of(model if isinstance(model, str) else None, fields.get("stream") is True)


@functools.lru_cache(maxsize=4096)
def request_of(model: str | None, stream: bool) -> RequestInfo:
    """The `RequestInfo` of (model, stream): one shared value per pair, built once."""
    return RequestInfo(model=model, stream=stream)


def as_partial(provenance: Provenance) -> Provenance:
    """What a stream cut before its final usage makes of the counts seen: reported becomes partial."""
    return Provenance(
        input=Source.PARTIAL if provenance.input is Source.REPORTED else provenance.input,
        output=Source.PARTIAL if provenance.output is Source.REPORTED else provenance.output,
        tokenizer=provenance.tokenizer,
    )


def compact_json(value: Any) -> str:
    """``value`` as compact JSON, non-ASCII kept: a tool call's arguments as a model writes them."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


UNPARSED = ParsedCall(flags=frozenset({Flag.UNPARSED}))
"""A body that is not the family's format (not JSON, not an object): usage unknown, nothing counted."""


def parsed(
    raw_usage: Any,
    spec: UsageMap,
    *,
    model: Any = None,
    response_id: Any = None,
    complete: bool = True,
    extra_flags: set[str] | None = None,
    output_text: Callable[[], str | None] | None = None,
) -> ParsedCall:
    """Build a `ParsedCall` from a raw usage object found in a body or stream."""
    usage, provenance, flags = read_usage(raw_usage, spec)
    if not complete:
        # Whatever usage was seen before the stream broke is a floor, not the bill.
        provenance = as_partial(provenance)
        flags.add(Flag.STREAM_INCOMPLETE)
    if extra_flags:
        flags |= extra_flags
    return ParsedCall(
        model=model if isinstance(model, str) else None,
        usage=usage,
        provenance=provenance,
        raw_usage=raw_usage,
        flags=frozenset(flags),
        response_id=response_id if isinstance(response_id, str) else None,
        complete=complete,
        output_text=output_text if usage.output_tokens is None or not complete else None,
    )


class WholeBody:
    """A JSON body read through a streaming response: collected, then parsed once at the end."""

    __slots__ = ("_chunks", "_parser")

    def __init__(self, parser: WireParser) -> None:
        self._parser = parser
        self._chunks: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        if outcome is not StreamOutcome.COMPLETE:
            return ParsedCall(complete=False, flags=frozenset({Flag.STREAM_INCOMPLETE}))
        return self._parser.parse(b"".join(self._chunks))


__all__ = [
    "MAX_COUNT",
    "REPORTED",
    "UNPARSED",
    "Count",
    "IdModelUsage",
    "ParsedCall",
    "RequestInfo",
    "StreamOutcome",
    "StreamParser",
    "UsageMap",
    "WholeBody",
    "WireParser",
    "as_partial",
    "compact_json",
    "is_count",
    "json_value",
    "loads",
    "parsed",
    "read_usage",
    "request_info",
    "top_level",
]
