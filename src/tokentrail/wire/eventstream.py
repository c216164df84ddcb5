"""An incremental decoder for the AWS event-stream framing (``application/vnd.amazon.eventstream``).

Bedrock's ConverseStream and InvokeModelWithResponseStream send their bodies as a sequence of binary
messages. Each message is (all integers big-endian)::

    total length   u32   the whole message, these 4 bytes and the trailing CRC included
    headers length u32
    prelude CRC    u32   CRC-32 of the 8 bytes above
    headers        name length u8, name (UTF-8), value type u8, value
    payload        total - headers - 16 bytes
    message CRC    u32   CRC-32 of every byte before it

CRC-32 is the gzip/zlib one. Spec: https://docs.aws.amazon.com/transcribe/latest/dg/event-stream.html
(the same page for Lex: https://docs.aws.amazon.com/lexv2/latest/dg/event-stream-encoding.html).
Header value types 0-9 and the size limits follow botocore's ``eventstream.py``.

Bytes arrive split anywhere, and the decoder yields the same messages whatever the split. A CRC that
does not match, a length out of bounds or an unknown header type makes the rest of the stream
unreadable (every later boundary depends on the broken length): the decoder stops, sets `failed`,
and ignores what follows. It never raises.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

_PRELUDE = 12
_MIN_MESSAGE = 16
# botocore's limits (_MAX_HEADERS_LENGTH, _MAX_PAYLOAD_LENGTH): anything larger is not this format.
_MAX_HEADERS = 128 * 1024
_MAX_PAYLOAD = 16 * 1024 * 1024

_U32x3 = struct.Struct(">III")
_U16 = struct.Struct(">H")
_FIXED = {
    2: struct.Struct(">b"),
    3: struct.Struct(">h"),
    4: struct.Struct(">i"),
    5: struct.Struct(">q"),
    8: struct.Struct(">q"),
}

HeaderValue = bool | int | bytes | str | uuid.UUID


@dataclass(frozen=True, slots=True)
class Message:
    headers: dict[str, HeaderValue]
    """``:event-type``, ``:message-type``, ``:content-type``, ``:exception-type``…"""
    payload: bytes


class EventStreamDecoder:
    """Feed bytes, get complete messages."""

    __slots__ = ("_buffer", "error", "failed")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.failed = False
        """A message was corrupt; nothing after it was decoded."""
        self.error: str | None = None
        """Why decoding stopped, when `failed`."""

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message held back; non-zero at the end means the body was cut."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[Message]:
        """The messages completed by ``chunk`` (a list: the state is settled before it is returned)."""
        if self.failed or not chunk:
            return []
        buffer = self._buffer
        buffer += chunk
        messages: list[Message] = []
        start = 0
        while len(buffer) - start >= _PRELUDE:
            total, headers_length, prelude_crc = _U32x3.unpack_from(buffer, start)
            if zlib.crc32(bytes(buffer[start : start + 8])) != prelude_crc:
                self._fail("prelude CRC mismatch")
                return messages
            if (
                total < _MIN_MESSAGE
                or headers_length > min(_MAX_HEADERS, total - _MIN_MESSAGE)
                or total - _MIN_MESSAGE - headers_length > _MAX_PAYLOAD
            ):
                self._fail(f"implausible lengths (total {total}, headers {headers_length})")
                return messages
            if len(buffer) - start < total:
                break
            message = bytes(buffer[start : start + total])
            if zlib.crc32(message[:-4]) != int.from_bytes(message[-4:], "big"):
                self._fail("message CRC mismatch")
                return messages
            headers = _headers(message, _PRELUDE, _PRELUDE + headers_length)
            if headers is None:
                self._fail("malformed headers")
                return messages
            messages.append(Message(headers, message[_PRELUDE + headers_length : -4]))
            start += total
        if start:
            del buffer[:start]
        return messages

    def _fail(self, why: str) -> None:
        self.failed = True
        self.error = why
        self._buffer = bytearray()


def _headers(data: bytes, i: int, end: int) -> dict[str, HeaderValue] | None:
    out: dict[str, HeaderValue] = {}
    try:
        while i < end:
            name_length = data[i]
            if i + 1 + name_length > end:
                return None
            name = data[i + 1 : i + 1 + name_length].decode("utf-8")
            i += 1 + name_length
            kind = data[i]
            i += 1
            value: HeaderValue
            if kind == 0 or kind == 1:
                value = kind == 0
            elif kind in _FIXED:
                fmt = _FIXED[kind]
                (value,) = fmt.unpack_from(data, i)
                i += fmt.size
            elif kind == 6 or kind == 7:
                (length,) = _U16.unpack_from(data, i)
                raw = data[i + 2 : i + 2 + length]
                if len(raw) != length:
                    return None
                value = raw if kind == 6 else raw.decode("utf-8")
                i += 2 + length
            elif kind == 9:
                raw = data[i : i + 16]
                if len(raw) != 16:
                    return None
                value = uuid.UUID(bytes=raw)
                i += 16
            else:
                return None
            if i > end:
                return None
            out[name] = value
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return out


def encode(headers: dict[str, str], payload: bytes) -> bytes:
    """One message with string headers: the inverse of the decoder, for tests and the simulator."""
    block = b"".join(
        bytes([len(n := name.encode())]) + n + b"\x07" + _U16.pack(len(v := value.encode())) + v
        for name, value in headers.items()
    )
    total = _MIN_MESSAGE + len(block) + len(payload)
    prelude = struct.pack(">II", total, len(block))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + block + payload
    return message + struct.pack(">I", zlib.crc32(message))


__all__ = ["EventStreamDecoder", "HeaderValue", "Message", "encode"]
