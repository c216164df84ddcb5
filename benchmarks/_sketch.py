"""The bar of ../shared/BENCHMARKING.md, measured in the same run: a bare ``Client.send`` patch, a deque
and a background SQLite writer that commits every 300 calls, and a per-chunk Python generator around
a stream. A sketch, not a product: it reads the five usage counts and nothing else (no request, no
scope, no call site, no price, no provenance, no live totals, no error path).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

COMMIT_EVERY = 300
INTERVAL_S = 0.2


def _usage_row(body: bytes, stream: bool) -> tuple[Any, ...]:
    if stream:  # the last event that carries usage (the mock writes compact JSON)
        for event in reversed(body.split(b"\n\n")):
            if event.startswith(b"data: {") and not event.endswith(b'"usage":null}'):
                usage = json.loads(event[6:])["usage"]
                break
        else:
            return (None,) * 5
    else:
        usage = json.loads(body).get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    reasoning = usage.get("completion_tokens_details") or {}
    return (usage.get("prompt_tokens"), usage.get("completion_tokens"), details.get("cached_tokens"),
            reasoning.get("reasoning_tokens"), usage.get("total_tokens"))  # fmt: skip


class SketchToggle:
    """The sketch on ``module`` (httpx or httpx2), switched on and off like the other toggles."""

    def __init__(self, module: Any, db: Path) -> None:
        self.module, self.original = module, module.Client.send
        self.queue: deque[tuple[bytes, bool]] = deque()
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(db, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS calls (input, output, cached, reasoning, total)")
        self.uncommitted = 0
        self.stream_class = self._stream_class()
        threading.Thread(target=self._loop, daemon=True, name="sketch-writer").start()

    def _stream_class(self) -> type:
        queue = self.queue

        class Chunks(self.module.SyncByteStream):  # type: ignore[misc,name-defined]
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __iter__(self) -> Any:
                kept = []
                for chunk in self.inner:
                    kept.append(chunk)
                    yield chunk
                queue.append((b"".join(kept), True))

            def close(self) -> None:
                self.inner.close()

        return Chunks

    def on(self) -> None:
        original, queue, chunks = self.original, self.queue, self.stream_class

        def send(client: Any, request: Any, **kwargs: Any) -> Any:
            response = original(client, request, **kwargs)
            if kwargs.get("stream"):
                response.stream = chunks(response.stream)
            else:
                queue.append((response.content, False))
            return response

        self.module.Client.send = send

    def off(self) -> None:
        self.module.Client.send = self.original

    def flush(self) -> None:
        self._drain(commit=True)

    def _loop(self) -> None:
        while True:
            time.sleep(INTERVAL_S)
            self._drain(commit=False)

    def _drain(self, commit: bool) -> None:
        with self.lock:
            rows = []
            while self.queue:
                rows.append(_usage_row(*self.queue.popleft()))
            while rows:  # a commit at every COMMIT_EVERY rows, and at a flush
                room = COMMIT_EVERY - self.uncommitted
                batch, rows = rows[:room], rows[room:]
                self.conn.executemany("INSERT INTO calls VALUES (?, ?, ?, ?, ?)", batch)
                self.uncommitted += len(batch)
                if self.uncommitted == COMMIT_EVERY:
                    self.conn.commit()
                    self.uncommitted = 0
            if commit and self.uncommitted:
                self.conn.commit()
                self.uncommitted = 0

    def rows_with(self, tokens: tuple[Any, ...]) -> tuple[int, int]:
        """(rows written, rows whose five counts are ``tokens``), after a flush."""
        self.flush()
        total = self.conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        right = self.conn.execute(
            "SELECT count(*) FROM calls WHERE input IS ? AND output IS ? AND cached IS ? AND reasoning IS ?"
            " AND total IS ?",
            tokens,
        ).fetchone()[0]
        return total, right
