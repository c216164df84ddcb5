#!/usr/bin/env python
"""How much process CPU tokentrail adds to one LLM call, background writer included.

The method is /work/shared/BENCHMARKING.md's (see docs/performance.md):

- one process, capture toggled: blocks of N calls alternate between off (``tokentrail.uninstrument()``)
  and on (``tokentrail.instrument(db)``), the order flipping inside every other pair;
- every block is timed with ``time.process_time_ns()`` (all threads: the writer's work counts) and ends
  with ``tokentrail.flush()``, so the records of an "on" block are written inside its window;
- N is chosen so a block of calls with capture off costs about one writer interval of CPU
  (``tokentrail.sinks.pipeline.interval``, 0.2 s);
- the figure is the median of the paired differences per call, with its interquartile range; A/A pairs
  (off/off, the same code) give the noise floor, printed beside it;
- rows 5s and 6s run BENCHMARKING.md's sketch (benchmarks/_sketch.py) on rows 5 and 6: the bar to beat;
- after the run the ledger is opened and every call made while on must be there, with the tokens the
  mock reported. The script exits 1 when it is not.

    python benchmarks/overhead.py              # the full run (~4 min on 2 cores)
    python benchmarks/overhead.py --quick      # a smoke test (< 60 s)
    python benchmarks/overhead.py --rows 1,2,5 --pairs 40 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import importlib.metadata
import json
import multiprocessing
import os
import platform
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
from _sketch import SketchToggle

import tokentrail
from tokentrail.sinks import pipeline

MODEL = "gpt-4o-mini"
ANSWERED_MODEL = "gpt-4o-mini-2024-07-18"
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark."}]
# The usage every mock answer reports; the ledger check compares each record with it.
PROMPT, COMPLETION, CACHED, REASONING = 57, 20, 16, 0
USAGE = {
    "prompt_tokens": PROMPT,
    "completion_tokens": COMPLETION,
    "total_tokens": PROMPT + COMPLETION,
    "prompt_tokens_details": {"cached_tokens": CACHED, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": REASONING,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
EXPECTED_TOKENS = (PROMPT, COMPLETION, CACHED, REASONING, PROMPT + COMPLETION)
BASE_URL = "http://bench.test/v1"
URL = BASE_URL + "/chat/completions"


# -- the mock server's answers ---------------------------------------------------------------------

BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": ANSWERED_MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello, benchmark!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
        "service_tier": "default",
    }
).encode()


def _sse_chunks() -> tuple[bytes, ...]:
    """23 ``chat.completion.chunk`` events (role, 20 contents, finish, usage) and ``[DONE]``: 24 chunks."""

    def chunk(choices: list[Any], usage: Any = None) -> bytes:
        obj = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": ANSWERED_MODEL,
            "system_fingerprint": "fp_bench",
            "choices": choices,
            "usage": usage,
        }
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
    events += [chunk(choice({"content": f"word{i} "})) for i in range(COMPLETION)]
    events.append(chunk(choice({}, "stop")))
    events.append(chunk([], USAGE))
    assert len(events) == 23
    return (*events, b"data: [DONE]\n\n")


SSE = _sse_chunks()
JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8"}


def _chunk_stream_class(module: Any) -> type:
    """A byte stream of ``module`` (httpx or httpx2) that hands the client each SSE event separately."""

    class ChunkStream(module.SyncByteStream, module.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, chunks: tuple[bytes, ...]) -> None:
            self._chunks = chunks

        def __iter__(self) -> Iterator[bytes]:
            yield from self._chunks

        async def __aiter__(self) -> Any:
            for chunk in self._chunks:
                yield chunk

    return ChunkStream


def _handlers(module: Any) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """(sync JSON, sync SSE, async JSON, async SSE) MockTransport handlers of ``module``."""
    stream_cls = _chunk_stream_class(module)

    def body(request: Any) -> Any:
        return module.Response(200, headers=JSON_HEADERS, content=BODY)

    def sse(request: Any) -> Any:
        return module.Response(200, headers=SSE_HEADERS, stream=stream_cls(SSE))

    async def abody(request: Any) -> Any:
        return body(request)

    async def asse(request: Any) -> Any:
        return sse(request)

    return body, sse, abody, asse


# -- rows --------------------------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    make: Callable[[Bench], Callable[[int], None]]
    """Builds the clients; returns ``run(n)``, which makes n calls."""
    stream: bool
    peer: str | None = None
    """None for tokentrail; else the peer measured instead (capture stays off)."""
    loopback: bool = False
    # results
    n: int = 0
    pairs: int = 0
    raw: list[float] = field(default_factory=list)
    added: list[float] = field(default_factory=list)
    aa: list[float] = field(default_factory=list)
    calls_on: int = 0
    skipped: str | None = None
    usage_seen: tuple[int, ...] | None = None
    """Loopback only: the usage the SDK returned, which every record must carry."""


def _sdk_sync(stream: bool) -> Callable[[Bench], Callable[[int], None]]:
    def make(bench: Bench) -> Callable[[int], None]:
        body, sse, _, _ = _handlers(httpx2)
        http = httpx2.Client(transport=httpx2.MockTransport(sse if stream else body))
        client = openai.OpenAI(base_url=BASE_URL, api_key="sk-bench", max_retries=0, http_client=http)
        # `completions.create` is looked up at every call: a peer may patch the class between blocks.
        completions = client.chat.completions
        if stream:

            def run(n: int) -> None:
                for _ in range(n):
                    for _chunk in completions.create(
                        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
                    ):
                        pass
        else:

            def run(n: int) -> None:
                for _ in range(n):
                    completions.create(model=MODEL, messages=MESSAGES)

        return run

    return make


def _sdk_async(stream: bool) -> Callable[[Bench], Callable[[int], None]]:
    def make(bench: Bench) -> Callable[[int], None]:
        _, _, abody, asse = _handlers(httpx2)
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(asse if stream else abody))
        client = openai.AsyncOpenAI(base_url=BASE_URL, api_key="sk-bench", max_retries=0, http_client=http)
        completions = client.chat.completions
        loop = bench.loop

        if stream:

            async def calls(n: int) -> None:
                for _ in range(n):
                    response = await completions.create(
                        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
                    )
                    async for _chunk in response:
                        pass
        else:

            async def calls(n: int) -> None:
                for _ in range(n):
                    await completions.create(model=MODEL, messages=MESSAGES)

        def run(n: int) -> None:
            loop.run_until_complete(calls(n))

        return run

    return make


REQUEST = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
REQUEST_STREAM = json.dumps(
    {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
).encode()
REQUEST_HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}


def _raw(module: Any, stream: bool) -> Callable[[Bench], Callable[[int], None]]:
    def make(bench: Bench) -> Callable[[int], None]:
        body, sse, _, _ = _handlers(module)
        client = module.Client(transport=module.MockTransport(sse if stream else body))
        if stream:

            def run(n: int) -> None:
                for _ in range(n):
                    with client.stream("POST", URL, content=REQUEST_STREAM, headers=REQUEST_HEADERS) as response:
                        for _chunk in response.iter_raw():
                            pass
        else:

            def run(n: int) -> None:
                post = client.post
                for _ in range(n):
                    post(URL, content=REQUEST, headers=REQUEST_HEADERS).content  # noqa: B018

        return run

    return make


def _loopback(bench: Bench) -> Callable[[int], None]:
    url = bench.simulator_url()
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0)
    completions = client.chat.completions
    row = bench.rows_by_key["9"]
    usage = completions.create(model=MODEL, messages=MESSAGES).usage
    assert usage is not None
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None
    reasoning = usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details else None
    row.usage_seen = (usage.prompt_tokens, usage.completion_tokens, cached or 0, reasoning or 0, usage.total_tokens)

    def run(n: int) -> None:
        for _ in range(n):
            completions.create(model=MODEL, messages=MESSAGES)

    return run


ANTHROPIC_BODY = json.dumps(
    {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": "Hello there, how can I help?"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 100, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 20,
                  "output_tokens": 30},
    }
).encode()  # fmt: skip
ANTHROPIC_TOKENS = (120, 30, 20, None, 150)  # input includes the cache read (ARCHITECTURE.md §2)
GEMINI_BODY = json.dumps(
    {
        "candidates": [{"content": {"parts": [{"text": "Hello there, how can I help?"}], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 30, "totalTokenCount": 130,
                          "cachedContentTokenCount": 20},
        "modelVersion": "gemini-2.5-flash", "responseId": "bench",
    }
).encode()  # fmt: skip
GEMINI_TOKENS = (100, 30, 20, None, 130)


def _json_handler(body: bytes) -> Callable[[Any], Any]:
    return lambda request: httpx2.Response(200, content=body, headers={"content-type": "application/json"})


def _anthropic(bench: Bench) -> Callable[[int], None]:
    import anthropic

    http = httpx2.Client(transport=httpx2.MockTransport(_json_handler(ANTHROPIC_BODY)))
    client = anthropic.Anthropic(base_url="http://bench.test", api_key="sk-bench", max_retries=0, http_client=http)
    messages = [{"role": "user", "content": "Say hello."}]

    def run(n: int) -> None:
        for _ in range(n):
            client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=messages)  # type: ignore[arg-type]

    return run


def _gemini(bench: Bench) -> Callable[[int], None]:
    from google import genai
    from google.genai import types

    options = types.HttpOptions(
        base_url="http://bench.test", client_args={"transport": httpx2.MockTransport(_json_handler(GEMINI_BODY))}
    )
    client = genai.Client(api_key="bench", http_options=options)

    def run(n: int) -> None:
        for _ in range(n):
            client.models.generate_content(model="gemini-2.5-flash", contents="Say hello.")

    return run


def all_rows() -> list[Row]:
    return [
        Row("1", "openai sync create, httpx2 MockTransport", _sdk_sync(False), stream=False),
        Row("2", "openai sync create, stream 23 chunks", _sdk_sync(True), stream=True),
        Row("3", "openai async create, httpx2 MockTransport", _sdk_async(False), stream=False),
        Row("4", "openai async create, stream 23 chunks", _sdk_async(True), stream=True),
        Row("5", "raw httpx2.Client.post", _raw(httpx2, False), stream=False),
        Row("6", "raw httpx2.Client.stream, 23 chunks", _raw(httpx2, True), stream=True),
        Row("7", "raw httpx.Client.post (0.28)", _raw(httpx, False), stream=False),
        Row("8", "raw httpx.Client.stream, 23 chunks", _raw(httpx, True), stream=True),
        Row("9", "loopback: openai sync create, tokentrail sim", _loopback, stream=False, loopback=True),
        Row("10", "anthropic sync messages.create, httpx2 MockTransport", _anthropic, stream=False,
            usage_seen=ANTHROPIC_TOKENS),
        Row("11", "google-genai generate_content, httpx2 MockTransport", _gemini, stream=False,
            usage_seen=GEMINI_TOKENS),
        Row("1o", "peer: OTel openai-v2 on row 1", _sdk_sync(False), stream=False, peer="otel"),
        Row("2o", "peer: OTel openai-v2 on row 2", _sdk_sync(True), stream=True, peer="otel"),
        Row("5s", "bar: BENCHMARKING.md's sketch on row 5", _raw(httpx2, False), stream=False, peer="sketch"),
        Row("6s", "bar: BENCHMARKING.md's sketch on row 6", _raw(httpx2, True), stream=True, peer="sketch"),
    ]


# -- toggles -----------------------------------------------------------------------------------------


class TokentrailToggle:
    """Capture on and off, and a flush that returns only when the writer is idle too."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.late_writes = 0
        """Blocks where `flush()` returned while the writer thread still held records of the block."""

    def on(self) -> None:
        tokentrail.instrument(self.db)
        # `instrument()` opens a fresh ledger connection at every toggle (`uninstrument()` closed it).
        # Open it here, outside the window: a long-running program pays that once, not per block.
        for sink in getattr(pipeline, "_sinks", ()):
            opener = getattr(sink, "_conn", None)
            if opener is not None:
                opener()

    def off(self) -> None:
        tokentrail.uninstrument()

    def flush(self) -> None:
        tokentrail.flush()
        # flush() must not return while the writer thread still holds records it took off the queues
        # (it could before 1b4f331). Check anyway, so that work stays inside this block's window and
        # not the next one's: wait (sleeping, no CPU) until the pipeline is idle; count the waits.
        waited = False
        deadline = time.monotonic() + 10
        while _pipeline_busy() and time.monotonic() < deadline:  # a failing sink keeps records queued
            waited = True
            time.sleep(0.0002)
            tokentrail.flush()
        self.late_writes += waited


def _pipeline_busy() -> bool:
    p = pipeline
    locks = [getattr(p, name, None) for name in ("_process_lock", "_write_lock")]
    return bool(
        getattr(p, "_pending", None) or getattr(p, "_ready", None) or any(lk is not None and lk.locked() for lk in locks)
    )


class OtelToggle:
    """OpenTelemetry's openai-v2 instrumentation with a BatchSpanProcessor and a counting exporter."""

    def __init__(self) -> None:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        outer = self
        self.spans = 0
        self.spans_with_usage = 0

        class CountingExporter(SpanExporter):
            """Keeps nothing: counts the spans and checks their usage attributes."""

            def export(self, spans: Any) -> Any:
                for span in spans:
                    a = span.attributes or {}
                    outer.spans += 1
                    tokens = (a.get("gen_ai.usage.input_tokens"), a.get("gen_ai.usage.output_tokens"))
                    outer.spans_with_usage += tokens == (PROMPT, COMPLETION)
                return SpanExportResult.SUCCESS

        self.provider = TracerProvider()
        self.provider.add_span_processor(BatchSpanProcessor(CountingExporter()))
        self.instrumentor = OpenAIInstrumentor()

    def on(self) -> None:
        if not self.instrumentor.is_instrumented_by_opentelemetry:
            self.instrumentor.instrument(tracer_provider=self.provider)

    def off(self) -> None:
        if self.instrumentor.is_instrumented_by_opentelemetry:
            self.instrumentor.uninstrument()

    def flush(self) -> None:
        self.provider.force_flush()


def otel_unavailable() -> str | None:
    """Why the OTel peer rows cannot run, or None."""
    try:
        import opentelemetry.instrumentation.openai_v2
        import opentelemetry.sdk.trace  # noqa: F401
    except Exception as exc:  # ImportError, or a version mismatch inside the package
        return f"opentelemetry-instrumentation-openai-v2 not usable: {exc!r}"
    return None


# -- the method --------------------------------------------------------------------------------------


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


class Bench:
    def __init__(self, args: argparse.Namespace, db: Path) -> None:
        self.args = args
        self.db = db
        self.loop = asyncio.new_event_loop()
        self.tokentrail = TokentrailToggle(db)
        self.otel: OtelToggle | None = None
        self.sketch: SketchToggle | None = None
        self.rows_by_key: dict[str, Row] = {}
        self._sim: Any = None

    def simulator_url(self) -> str:
        # The simulator runs in a child process: its CPU (tokenizing every answer) is not ours to count.
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_simulator_child, args=(child,), daemon=True)
        process.start()
        url = parent.recv()
        self._sim = (process, parent)
        return url

    def close(self) -> None:
        if self._sim is not None:
            process, conn = self._sim
            conn.send("stop")
            process.join(timeout=10)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def measure(self, row: Row, toggle: Any) -> None:
        args = self.args
        run = row.make(self)

        def block(on: bool, n: int) -> int:
            (toggle.on if on else toggle.off)()
            gc.collect()
            t0 = time.process_time_ns()
            run(n)
            toggle.flush()
            elapsed = time.process_time_ns() - t0
            if on:
                row.calls_on += n
            return elapsed

        # Warm up (both states: imports, caches, the pipeline's first records), then size N on the
        # CPU time of calls with capture off. (On an idle machine CPU and wall time agree; on a busy one
        # CPU time gives the same N from run to run.)
        warm, k = max(args.block_s, 0.1), 10
        for on in (False, True, False):
            toggle.on() if on else toggle.off()
            run(k)
            started, calls = time.process_time(), 0
            while time.process_time() - started < warm:
                run(k)
                calls += k
            per_call = (time.process_time() - started) / calls
            if on:
                toggle.flush()
                row.calls_on += calls + k
        row.n = n = max(5, round(args.block_s / per_call))
        row.pairs = args.pairs
        # Move everything alive now (SDK, pydantic, the clients) out of the collector's sight: a full
        # collection over that heap costs ~10 ms and lands in one block or another at random, which
        # is noise of ±100 µs per SDK call. Objects created during the blocks are still collected.
        gc.collect()
        gc.freeze()

        for i in range(args.pairs):
            flip = i % 2 == 1
            # A/B with the order flipped in every other pair; then A/A with the same code, both off.
            first, second = (False, True) if flip else (True, False)
            t = {first: block(first, n), second: block(second, n)}
            row.added.append((t[True] - t[False]) / n / 1000)
            row.raw.append(t[False] / n / 1000)
            a, b = block(False, n), block(False, n)
            row.aa.append(((b - a) if flip else (a - b)) / n / 1000)
        toggle.off()
        gc.unfreeze()

    def run_row(self, row: Row) -> None:
        if row.peer == "otel":
            if self.otel is None:
                why = otel_unavailable()
                if why is not None:
                    row.skipped = why
                    return
                self.otel = OtelToggle()
            self.measure(row, self.otel)
            return
        if row.peer == "sketch":
            if self.sketch is None:
                self.sketch = SketchToggle(httpx2, self.db.with_name(self.db.name + ".sketch"))
            self.measure(row, self.sketch)
            return
        with tokentrail.run(f"bench-{row.key}"):
            self.measure(row, self.tokentrail)


def _simulator_child(conn: Any) -> None:
    from tokentrail.sim import Simulator

    with Simulator() as sim:
        conn.send(sim.url)
        conn.recv()


# -- where the added CPU goes -------------------------------------------------------------------------


def profile(bench: Bench, row: Row, n: int, reps: int) -> None:
    """Split tokentrail's added CPU per call into the caller's thread, processing and writing.

    The writer thread is parked (its interval set to an hour) so that processing and writing run in
    this thread, where they can be timed one by one and seen by cProfile. For finding the cost, not
    for quoting it: the table's paired figures are the ones to quote.
    """
    import cProfile
    import pstats

    toggle = bench.tokentrail
    run = row.make(bench)
    toggle.on()
    run(warm := max(50, n // 10))
    row.calls_on += warm
    toggle.flush()
    saved, pipeline.interval = pipeline.interval, 3600.0
    time.sleep(saved + 0.1)  # the writer finishes its current wait and starts the long one
    parts: dict[str, list[float]] = {"off": [], "on": [], "process": [], "write": []}
    try:
        for i in range(reps):
            for on in (False, True) if i % 2 else (True, False):
                (toggle.on if on else toggle.off)()
                gc.collect()
                t0 = time.process_time_ns()
                run(n)
                t1 = time.process_time_ns()
                if not on:
                    parts["off"].append((t1 - t0) / n / 1000)
                    continue
                pipeline.process_pending()
                t2 = time.process_time_ns()
                pipeline.write_ready()
                t3 = time.process_time_ns()
                parts["on"].append((t1 - t0) / n / 1000)
                parts["process"].append((t2 - t1) / n / 1000)
                parts["write"].append((t3 - t2) / n / 1000)
                row.calls_on += n
        m = {k: statistics.median(v) for k, v in parts.items()}
        caller = statistics.median(a - b for a, b in zip(parts["on"], parts["off"], strict=True))
        print(f"row {row.key} ({row.label}), N={n}, {reps} pairs, µs of process CPU per call (medians):")
        print(f"  raw call (off)                       {m['off']:8.1f}")
        print(f"  caller's thread: on − off (paired)   {caller:+8.1f}")
        print(f"  pipeline.process_pending, per record {m['process']:+8.1f}")
        print(f"  pipeline.write_ready, per record     {m['write']:+8.1f}  (one batch of N: one commit)")
        print(f"  sum                                  {caller + m['process'] + m['write']:+8.1f}")
        print()
        profiler = cProfile.Profile()
        profiler.enable()
        run(n)
        pipeline.process_pending()
        pipeline.write_ready()
        profiler.disable()
        row.calls_on += n
        stats = pstats.Stats(profiler, stream=sys.stdout)
        print(f"cProfile of {n} calls with capture on, processing and writing included (tokentrail, sqlite3, json,")
        print("contextlib and dataclass frames; times inflated by the profiler):")
        stats.sort_stats("tottime").print_stats(r"tokentrail|sqlite3|json|contextlib|<string>", 30)
    finally:
        pipeline.interval = saved
        toggle.off()


# -- proof of work -----------------------------------------------------------------------------------


@dataclass
class Proof:
    found: int
    expected: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.found == self.expected and not self.problems


def _verify_ledger(rows: list[Row], db: Path, problems: list[str]) -> tuple[int, int]:
    """(records found, calls made while on) of tokentrail's rows; what is wrong goes to ``problems``."""
    found = expected = 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        counts = dict(conn.execute("SELECT run, count(*) FROM calls GROUP BY run").fetchall())
        for row in rows:
            if row.skipped or row.peer is not None:
                continue
            run = f"bench-{row.key}"
            got = counts.pop(run, 0)
            found += got
            expected += row.calls_on
            if got != row.calls_on:
                problems.append(f"row {row.key}: {got} records for {row.calls_on} calls made while on")
            tokens = row.usage_seen or EXPECTED_TOKENS
            wrong = conn.execute(
                "SELECT count(*) FROM calls WHERE run = ? AND NOT (input_tokens IS ? AND output_tokens IS ?"
                " AND cache_read_tokens IS ? AND reasoning_tokens IS ? AND total_tokens IS ?"
                " AND status = 'ok' AND stream = ? AND usage_source = 'reported')",
                (run, *tokens, int(row.stream)),
            ).fetchone()[0]
            if wrong:
                problems.append(f"row {row.key}: {wrong} records without the expected tokens {tokens}")
        for run, got in counts.items():  # calls outside every benchmark row (made while off?)
            found += got
            problems.append(f"{got} unexpected records in run {run!r}")
        drops = conn.execute("SELECT coalesce(sum(count), 0) FROM drops").fetchone()[0]
        if drops:
            problems.append(f"the ledger counts {drops} dropped records")
    finally:
        conn.close()
    return found, expected


def verify(rows: list[Row], db: Path, otel: OtelToggle | None, sketch: SketchToggle | None = None) -> Proof:
    """Every call made while on is in the ledger, with the reported tokens; none made while off."""
    problems: list[str] = []
    found = expected = 0
    if any(row.peer is None and not row.skipped for row in rows):  # else no ledger was opened
        found, expected = _verify_ledger(rows, db, problems)
    if otel is not None:
        calls = sum(r.calls_on for r in rows if r.peer == "otel" and not r.skipped)
        found += otel.spans
        expected += calls
        if otel.spans != calls or otel.spans_with_usage != calls:
            problems.append(f"OTel: {otel.spans} spans ({otel.spans_with_usage} with usage) for {calls} calls")
    if sketch is not None:
        calls = sum(r.calls_on for r in rows if r.peer == "sketch")
        total, right = sketch.rows_with(EXPECTED_TOKENS)
        found += total
        expected += calls
        if total != calls or right != calls:
            problems.append(f"sketch: {total} rows ({right} with the expected tokens) for {calls} calls")
    return Proof(found, expected, problems)


# -- report ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        cores_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_usable = os.cpu_count()
    # The commit of the tokentrail actually imported (it may be an export run with PYTHONPATH).
    source = Path(tokentrail.__file__).resolve().parent
    commit = None
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5
        ).stdout.strip() or None
    versions = {}
    for dist in ("tokentrail", "openai", "httpx", "httpx2", "opentelemetry-instrumentation-openai-v2"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": cores_usable,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version() + " " + platform.python_implementation(),
        "versions": versions,
        "tokentrail_source": str(source),
        "commit": commit or "not a git checkout",
    }


def summarize(row: Row) -> dict[str, Any]:
    if row.skipped:
        return {"row": row.key, "label": row.label, "skipped": row.skipped}
    q1, med, q3 = _quartiles(row.added)
    a1, amed, a3 = _quartiles(row.aa)
    return {
        "row": row.key,
        "label": row.label,
        "who": row.peer or "tokentrail",
        "n": row.n,
        "pairs": row.pairs,
        "raw_us": round(statistics.median(row.raw), 1),
        "added_us": round(med, 2),
        "added_iqr_us": [round(q1, 2), round(q3, 2)],
        "aa_us": round(amed, 2),
        "aa_iqr_us": [round(a1, 2), round(a3, 2)],
        "calls_on": row.calls_on,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| row | exchange | N | pairs | raw µs/call | + µs/call (median) | IQR | A/A floor (median, IQR) |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['row']} | {r['label']} | | | | skipped | {r['skipped']} | |")
            continue
        q1, q3 = r["added_iqr_us"]
        a1, a3 = r["aa_iqr_us"]
        lines.append(
            f"| {r['row']} | {r['label']} | {r['n']} | {r['pairs']} | {r['raw_us']:,.0f} | {r['added_us']:+.1f} |"
            f" {q1:+.1f} … {q3:+.1f} | {r['aa_us']:+.1f} ({a1:+.1f} … {a3:+.1f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N and few pairs: a smoke test under 60 s")
    parser.add_argument("--pairs", type=int, default=None, help="A/B pairs per row (each with an A/A pair); default 16, 4 with --quick")
    parser.add_argument(
        "--rows", default=None, help="rows to run, e.g. 1,2,5 (peer rows: 1o,2o; the sketch: 5s,6s); default all"
    )
    parser.add_argument("--block-seconds", dest="block_s", type=float, default=None,
                        help="target block length; default the writer's interval (0.2 s), 0.03 with --quick")  # fmt: skip
    parser.add_argument("--db", type=Path, default=None, help="keep the ledger here (default: a temporary file)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--profile", metavar="ROW", default=None,
                        help="instead of the table: split tokentrail's added CPU for one row, then cProfile it")  # fmt: skip
    args = parser.parse_args(argv)
    args.pairs = args.pairs or (4 if args.quick else 16)
    args.block_s = args.block_s or (0.03 if args.quick else pipeline.interval)

    rows = all_rows()
    if args.rows:
        wanted = [k.strip() for k in args.rows.split(",") if k.strip()]
        unknown = set(wanted) - {r.key for r in rows}
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}; choose from {[r.key for r in rows]}")
        rows = [r for r in rows if r.key in wanted]

    info = machine()
    info["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["command"] = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", *argv])
    info["writer_interval_s"] = pipeline.interval

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="tokentrail-bench-") as tmp:
        db = (args.db or Path(tmp) / "bench.db").resolve()
        if db.exists():
            parser.error(f"{db} exists: the record check needs a fresh ledger")
        bench = Bench(args, db)
        bench.rows_by_key = {r.key: r for r in rows}
        if args.profile:
            row = next((r for r in all_rows() if r.key == args.profile and r.peer is None), None)
            if row is None:
                parser.error(f"--profile takes a tokentrail row (1-9), not {args.profile!r}")
            bench.rows_by_key = {row.key: row}
            try:
                with tokentrail.run(f"bench-{row.key}"):
                    profile(bench, row, n=100 if args.quick else 1000 if row.key in "5678" else 200, reps=4 if args.quick else 12)
            finally:
                tokentrail.uninstrument()
                bench.close()
            proof = verify([row], db, None)
            print(f"records: {proof.found} / expected {proof.expected}")
            return 0 if proof.ok else 1
        started = time.perf_counter()
        try:
            for row in rows:
                t = time.perf_counter()
                bench.run_row(row)
                what = row.skipped or f"N={row.n}, {row.pairs} pairs, {time.perf_counter() - t:.0f} s"
                progress(f"row {row.key:>2} {row.label}: {what}")
        finally:
            tokentrail.uninstrument()
            bench.close()
        proof = verify(rows, db, bench.otel, bench.sketch)
        elapsed = time.perf_counter() - started

    results = [summarize(r) for r in rows]
    late = bench.tokentrail.late_writes
    if args.json:
        doc = {
            **info,
            "method": "one process, toggled; median of paired differences of process CPU per call",
            "rows": results,
            "records": {"found": proof.found, "expected": proof.expected, "ok": proof.ok, "problems": proof.problems},
            "flush_returned_early_blocks": late,
            "elapsed_s": round(elapsed, 1),
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        v = info["versions"]
        print(f"date:     {info['date']}")
        print(f"command:  {info['command']}")
        print(f"machine:  {info['platform']}; {info['cpu']}; {info['cores']} cores ({info['cores_usable']} usable);"
              f" load {info['loadavg_at_start']}")  # fmt: skip
        print(f"python:   {info['python']}")
        print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
        print(f"source:   {info['tokentrail_source']} (commit {info['commit']})")
        print(f"method:   process CPU per call, median of {args.pairs} paired differences (on − off) per row;"
              f" blocks of N calls ≈ {args.block_s} s (writer interval {pipeline.interval} s), each ending with"
              " flush(); A/A = off − off, same code")  # fmt: skip
        print()
        print(table(results))
        print()
        if late:
            print(f"note: in {late} blocks flush() returned while the writer thread still held records;"
                  " the benchmark waited for it inside the window")  # fmt: skip
        print(f"records: {proof.found} / expected {proof.expected}" + ("" if proof.ok else "  MISMATCH"))
        for problem in proof.problems:
            print(f"  - {problem}")
        print(f"elapsed: {elapsed:.0f} s")
    return 0 if proof.ok else 1


if __name__ == "__main__":
    sys.exit(main())
