"""Stacked instrumentation: OpenTelemetry's openai-v2 instrumentation wraps the SDK's methods while
tokentrail sits under the SDK, on the HTTP client. Both stay on: still exactly one record per HTTP
attempt (sync, async, streams, an SDK retry) with the tokens served, and OpenTelemetry still makes its
spans, with the same counts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("opentelemetry.sdk.trace")
openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import tokentrail  # noqa: E402
from tests.hidden.conftest import records_match, served_since  # noqa: E402
from tokentrail.sim import Simulator  # noqa: E402

MESSAGES = [{"role": "user", "content": "Name three rivers."}]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """OpenTelemetry's openai-v2 instrumentation on, exporting to memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def span_usage(span: ReadableSpan) -> tuple[Any, Any]:
    attributes = span.attributes or {}
    return attributes.get("gen_ai.usage.input_tokens"), attributes.get("gen_ai.usage.output_tokens")


def test_one_record_per_attempt_and_spans_still_made(db: Path, sim: Simulator, spans: InMemorySpanExporter) -> None:
    start = len(sim.served)
    stream_options = {"include_usage": True}
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0) as client:
        with tokentrail.run("stacked"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            stream = client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True, stream_options=stream_options
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])

    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0) as aclient:
            async with tokentrail.run("stacked"):
                await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                astream = await aclient.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, stream=True, stream_options=stream_options
                )
                assert [c async for c in astream]

    asyncio.run(main())
    served = served_since(sim, start)
    calls = records_match(db, served)
    assert len(calls) == len(served) == 5
    assert [(c["api"], c["stream"]) for c in calls] == [
        ("openai.chat", False), ("openai.chat", True), ("openai.embeddings", False),
        ("openai.chat", False), ("openai.chat", True),
    ]  # fmt: skip
    assert all(c["status"] == "ok" and c["attempt"] == 1 and c["usage_source"] == "reported" for c in calls)
    assert {c["run"] for c in calls} == {"stacked"}
    # OpenTelemetry saw the same five calls with the same counts (an embeddings span has no output count).
    finished = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert [s.name for s in finished] == [
        "chat gpt-4o-mini", "chat gpt-4o", "embeddings text-embedding-3-small", "chat gpt-4o-mini", "chat gpt-4o",
    ]  # fmt: skip
    assert [span_usage(s) for s in finished] == [
        (c["input_tokens"], None if c["api"] == "openai.embeddings" else c["output_tokens"]) for c in calls
    ]


def test_sdk_retry_is_two_records_under_one_span(db: Path, sim: Simulator, spans: InMemorySpanExporter) -> None:
    start = len(sim.served)
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=2) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Sim-Fault": "429*1"})
    served = served_since(sim, start)
    failed, ok = records_match(db, served)
    assert (failed["status"], failed["http_status"], failed["attempt"]) == ("http_error", 429, 1)
    assert (ok["status"], ok["attempt"]) == ("ok", 2)
    # OpenTelemetry wraps the SDK method, above its retry loop: one span, with the successful attempt's usage.
    [span] = spans.get_finished_spans()
    assert span_usage(span) == (ok["input_tokens"], ok["output_tokens"])


def test_call_site_is_the_caller_not_the_otel_wrapper(db: Path, sim: Simulator, spans: InMemorySpanExporter) -> None:
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        client.embeddings.create(model="text-embedding-3-small", input="alpha")
    calls = records_match(db, served_since(sim, len(sim.served) - 2))
    assert len(spans.get_finished_spans()) == 2
    for call in calls:
        assert call["call_site"].startswith("tests/hidden/test_otel_stacked.py:"), call["call_site"]
        assert call["call_function"] == f"{__name__}.test_call_site_is_the_caller_not_the_otel_wrapper"
