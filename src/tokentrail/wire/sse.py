"""An incremental decoder for Server-Sent Events, shared by the streaming API families.

Bytes arrive split anywhere — inside a line, inside a multi-byte character, between ``\\r`` and
``\\n`` — and the decoder yields the same events whatever the split (a Hypothesis property checks it).
Only the ``event`` and ``data`` fields matter to usage; ``id`` and ``retry`` are ignored.
Spec: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple


class SseEvent(NamedTuple):
    event: str
    """The event name; ``"message"`` when the stream names none."""
    data: bytes
    """The data lines joined by ``\\n``, as bytes (parsers decide whether to decode them)."""


class SseDecoder:
    """Feed bytes, get complete events.

    Linear in the stream's length whatever its chunking: an event still incomplete is kept as its
    pieces, and only the newest piece is searched for the blank line that ends it (an event of
    megabytes in kilobyte chunks, a base64 image say, cost quadratic time when the whole buffer was
    copied and searched per chunk)."""

    __slots__ = ("_pending", "_pending_cr")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        """The incomplete event's pieces, in order, none holding a blank line."""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        """The events completed by ``chunk``."""
        if not chunk:  # an empty read must not settle a pending CR
            return
        if b"\r" in chunk or self._pending_cr:
            chunk = self._normalize(chunk)
            if not chunk:
                return
        pending = self._pending
        end = chunk.rfind(b"\n\n")
        if pending:
            # The blank line may straddle the previous piece and this one.
            if end < 0 and not (chunk[0] == 10 and pending[-1][-1] == 10):  # 10: "\n"
                pending.append(chunk)
                return
            pending.append(chunk)
            buffer = b"".join(pending)  # once per completed event: linear overall
            pending.clear()
            end = buffer.rfind(b"\n\n")
        elif end < 0:
            pending.append(chunk)
            return
        else:
            buffer = chunk
        if end + 2 < len(buffer):
            pending.append(buffer[end + 2 :])
        for block in buffer[:end].split(b"\n\n"):
            # The common case, one "data: …" line, without the general parse (it runs per chunk).
            if block.startswith(b"data: ") and b"\n" not in block:
                yield SseEvent("message", block[6:])
                continue
            event = _parse_block(block)
            if event is not None:
                yield event

    def close(self) -> Iterator[SseEvent]:
        """An event left without its blank line at the end of the stream is dropped, per the spec."""
        self._pending.clear()
        return iter(())

    def _normalize(self, chunk: bytes) -> bytes:
        # CRLF and lone CR both end a line. A CR at the very end of a chunk may be the first half of
        # a CRLF split across chunks, so its fate is decided with the next chunk.
        if self._pending_cr:
            self._pending_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if chunk.endswith(b"\r"):
            self._pending_cr = True
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _parse_block(block: bytes) -> SseEvent | None:
    name = "message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data"):
            value = line[5:] if line[4:5] == b":" else (b"" if len(line) == 4 else None)
            if value is None:
                continue
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    if not data:
        return None
    return SseEvent(name, b"\n".join(data))
