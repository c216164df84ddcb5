"""The real openai SDK against the simulator on loopback: every attempt recorded, exactly."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

import tokentrail
from tests.conftest import recorded
from tokentrail.enrich.count import count_text
from tokentrail.sim import Simulator

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three rivers."}]


@pytest.fixture
def client(sim: Simulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=2) as client:
        yield client


@pytest.fixture
def aclient(sim: Simulator) -> Callable[[], openai.AsyncOpenAI]:
    """A factory: an async client must be created (and closed) inside its event loop."""
    return lambda: openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=2)


def served_usage(sim: Simulator) -> dict[str, Any]:
    last = sim.served[-1]
    return {"input_tokens": last.input_tokens, "output_tokens": last.output_tokens}


def test_chat_sync_record_matches_what_was_served(db: Path, client: openai.OpenAI, sim: Simulator) -> None:
    with tokentrail.run("trial-1", seed=3) as run, tokentrail.agent("planner") as agent:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [call] = recorded(db)
    served = sim.served[-1]
    assert reply.usage is not None
    assert call["input_tokens"] == served.input_tokens == reply.usage.prompt_tokens
    assert call["output_tokens"] == served.output_tokens == reply.usage.completion_tokens
    assert call["total_tokens"] == served.input_tokens + served.output_tokens
    assert call["cache_read_tokens"] == 0 and call["reasoning_tokens"] == 0
    assert (call["usage_source"], call["input_source"], call["output_source"]) == ("reported",) * 3
    assert (call["run"], call["agent"], call["scope_path"]) == ("trial-1", "planner", "trial-1/planner")
    assert (call["api"], call["provider"], call["model"], call["status"], call["attempt"]) == (
        "openai.chat", "local", "gpt-4o-mini", "ok", 1,
    )  # fmt: skip
    assert call["stream"] is False and call["flags"] == [] and call["http_status"] == 200
    assert call["call_site"].startswith("tests/capture/test_openai_sdk.py:")
    assert call["call_function"] == "tests.capture.test_openai_sdk.test_chat_sync_record_matches_what_was_served"
    assert agent.usage.calls == run.usage.calls == 1
    assert agent.last is not None and agent.last.input_tokens == served.input_tokens
    assert run.usage.total_tokens == call["total_tokens"]


def test_chat_async(db: Path, aclient: Callable[[], openai.AsyncOpenAI], sim: Simulator) -> None:
    async def main() -> None:
        async with aclient() as client, tokentrail.run("async-run"):
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    asyncio.run(main())
    [call] = recorded(db)
    assert {k: call[k] for k in ("input_tokens", "output_tokens")} == served_usage(sim)
    assert call["run"] == "async-run" and call["status"] == "ok"


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_sync(db: Path, client: openai.OpenAI, sim: Simulator, include_usage: bool) -> None:
    with tokentrail.run("stream"):
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": include_usage}
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    [call] = recorded(db)
    assert call["stream"] is True and call["status"] == "ok" and call["flags"] == []
    assert call["first_token_ms"] is not None and call["first_token_ms"] <= call["latency_ms"]
    if include_usage:
        assert {k: call[k] for k in ("input_tokens", "output_tokens")} == served_usage(sim)
        assert call["usage_source"] == "reported"
    else:
        # No usage on the wire: counted with the model's own tokenizer, exactly what was served.
        assert {k: call[k] for k in ("input_tokens", "output_tokens")} == served_usage(sim)
        assert (call["usage_source"], call["tokenizer"]) == ("counted", "o200k_base")


def test_chat_stream_async(db: Path, aclient: Callable[[], openai.AsyncOpenAI], sim: Simulator) -> None:
    async def main() -> str:
        async with aclient() as client:
            return await consume(client)

    async def consume(client: openai.AsyncOpenAI) -> str:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(main())
    [call] = recorded(db)
    assert {k: call[k] for k in ("input_tokens", "output_tokens")} == served_usage(sim)


def test_responses_sync_and_stream(db: Path, client: openai.OpenAI, sim: Simulator) -> None:
    response = client.responses.create(model="o4-mini", input="Plan a trip.", reasoning={"effort": "low"})
    plain = served_usage(sim) | {"reasoning_tokens": sim.served[-1].reasoning_tokens}
    with client.responses.stream(model="gpt-4o", input="Plan a trip.") as stream:
        for _ in stream:
            pass
    streamed = served_usage(sim)
    first, second = recorded(db)
    assert response.usage is not None
    assert first["api"] == second["api"] == "openai.responses"
    assert {k: first[k] for k in plain} == plain and first["reasoning_tokens"] > 0
    assert first["reasoning_tokens"] == response.usage.output_tokens_details.reasoning_tokens
    assert {k: second[k] for k in streamed} == streamed and second["stream"] is True


def test_embeddings_output_is_zero_not_unknown(db: Path, client: openai.OpenAI, sim: Simulator) -> None:
    client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
    [call] = recorded(db)
    assert call["api"] == "openai.embeddings"
    assert call["input_tokens"] == sim.served[-1].input_tokens and call["output_tokens"] == 0
    assert call["usage_source"] == "reported"


def test_retry_after_429_is_two_attempts(db: Path, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Sim-Fault": "429*1"})
    failed, ok = recorded(db)
    assert (failed["status"], failed["http_status"], failed["attempt"], failed["flags"]) == (
        "http_error", 429, 1, ["http_error"],
    )  # fmt: skip
    assert failed["input_tokens"] is None and failed["usage_source"] == "missing"
    assert (ok["status"], ok["attempt"], ok["input_tokens"] is not None) == ("ok", 2, True)


def test_http_error_without_retry(db: Path, sim: Simulator) -> None:
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0) as client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Sim-Fault": "500"})
    [call] = recorded(db)
    assert (call["status"], call["http_status"]) == ("http_error", 500)


def test_stream_cut_by_the_server(db: Path, client: openai.OpenAI, sim: Simulator) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
        extra_headers={"X-Sim-Fault": "cut:3"},
    )  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017 - the SDK's error type for a broken stream varies by version
        for _ in stream:
            pass
    [call] = recorded(db)
    assert call["status"] == "network_error" and "stream_incomplete" in call["flags"]
    assert call["input_tokens"] == sim.served[-1].input_tokens and call["input_source"] == "counted"
    assert call["output_tokens"] < sim.served[-1].output_tokens and "count_floor" in call["flags"]


def test_stream_closed_early_by_the_caller(db: Path, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    next(iter(stream))
    stream.close()
    [call] = recorded(db)
    assert call["status"] == "cancelled" and "stream_incomplete" in call["flags"]
    assert call["input_source"] == "counted" and "count_floor" in call["flags"]


def test_abandoned_stream_is_recorded_when_collected(db: Path, client: openai.OpenAI) -> None:
    def start() -> None:
        stream = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        del stream

    with tokentrail.run("abandoned"):  # a response an earlier test left unread may be collected here too
        start()
    gc.collect()
    calls = recorded(db, run="abandoned")
    assert len(calls) == 1 and calls[0]["status"] in ("cancelled", "ok")


def test_an_async_stream_drained_again_by_the_sdk_is_recorded_once(db: Path) -> None:
    # openai 3.x iterates an async stream's raw bytes again after its end (`drain_response_async`);
    # a stream that can be read twice (in memory, a mock, a replay) must not be counted twice.
    from tests.capture._clients import http, mock_async_client

    chunk = b'data: {"id":"c1","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'
    chunks = [chunk % b"one ", chunk % b"two", b"data: [DONE]\n\n"]  # no usage: the output is counted

    class Replayable(http.AsyncByteStream):  # type: ignore[misc,name-defined]
        async def __aiter__(self) -> Any:
            for c in chunks:
                yield c

    def handler(request: Any) -> Any:
        return http.Response(200, headers={"content-type": "text/event-stream"}, stream=Replayable())

    async def main() -> str:
        async with mock_async_client(handler) as client:
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    with tokentrail.run("drained"):
        assert asyncio.run(main()) == "one two"
    [call] = recorded(db, run="drained")
    counted = count_text("one two", "gpt-4o-mini")
    assert counted is not None
    assert (call["status"], call["output_tokens"], call["output_source"]) == ("ok", counted.tokens, "counted")


def test_network_error_is_recorded(db: Path) -> None:
    with openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-test", max_retries=0, timeout=2) as client:
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [call] = recorded(db)
    assert call["status"] == "network_error" and call["http_status"] is None
    assert call["input_tokens"] is None and call["usage_source"] == "missing"


def test_non_llm_traffic_is_not_recorded(db: Path, client: openai.OpenAI, sim: Simulator) -> None:
    from tests.capture._clients import http

    http.get(sim.url + "/health")
    http.post(sim.url + "/v1/files", json={})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [c["api"] for c in recorded(db)] == ["openai.chat"]


def _httpx_of_the_sdk() -> Any:
    """The httpx module (httpx or httpx2) that this openai version sends through."""
    import importlib

    return importlib.import_module(openai.DefaultHttpxClient.__bases__[0].__module__.partition(".")[0])


def test_a_call_made_by_an_event_hook_is_recorded_too(db: Path, client: openai.OpenAI, sim: Simulator) -> None:
    """A client on httpx's own connection pool is not suppressed while it sends: an LLM call made by
    one of its event hooks (a judge of each answer, say) is a call of its own."""

    def judge(response: Any) -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    http = openai.DefaultHttpxClient(event_hooks={"response": [judge]})
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", http_client=http) as judged:
        with tokentrail.run("judged"):
            judged.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    calls = recorded(db, run="judged")
    assert sorted(c["requested_model"] for c in calls) == ["gpt-4o", "gpt-4o-mini"]
    assert all(c["status"] == "ok" and c["input_tokens"] for c in calls)


def test_an_app_served_in_process_records_only_the_callers_call(
    db: Path, client: openai.OpenAI, sim: Simulator
) -> None:
    """A transport that runs Python below the client (here an in-process proxy answering from the
    API, as an app behind ``ASGITransport`` would) is suppressed: its upstream call is not counted
    a second time."""
    httpx = _httpx_of_the_sdk()

    def proxy(request: Any) -> Any:
        upstream = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
        return httpx.Response(200, headers={"content-type": "application/json"}, content=upstream.http_response.content)

    served = len(sim.served)
    http = openai.DefaultHttpxClient(transport=httpx.MockTransport(proxy))
    with openai.OpenAI(base_url="http://proxy.test/v1", api_key="sk-test", http_client=http) as proxied:
        with tokentrail.run("proxied"):
            proxied.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(sim.served) == served + 1  # the upstream call was made, and is not in the ledger
    [call] = recorded(db, run="proxied")
    assert call["input_tokens"] == sim.served[-1].input_tokens


def test_client_created_before_instrument_is_captured(tmp_path: Path, sim: Simulator) -> None:
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test") as early:
        with tokentrail.instrument(tmp_path / "late.db"):
            early.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert len(recorded(tmp_path / "late.db")) == 1


def test_nothing_recorded_after_uninstrument(tmp_path: Path, client: openai.OpenAI) -> None:
    with tokentrail.instrument(tmp_path / "off.db"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(recorded(tmp_path / "off.db")) == 1


def test_threads_and_pools_keep_the_scope(db: Path, client: openai.OpenAI) -> None:
    def call() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    pool = ThreadPoolExecutor(max_workers=2)  # created before the scope: submit() carries it
    with tokentrail.run("threads"):
        with tokentrail.agent("pool-agent") as pooled:
            list(pool.map(lambda _: call(), range(3)))
            loop = asyncio.new_event_loop()
            loop.run_until_complete(loop.run_in_executor(None, call))
            loop.close()
        with tokentrail.agent("thread-agent") as threaded:
            worker = threading.Thread(target=call)
            worker.start()
            worker.join()
    pool.shutdown()
    calls = recorded(db)
    assert sorted(c["agent"] for c in calls) == ["pool-agent"] * 4 + ["thread-agent"]
    assert pooled.usage.calls == 4 and threaded.usage.calls == 1


def test_asyncio_tasks_keep_their_own_scopes(db: Path, aclient: Callable[[], openai.AsyncOpenAI]) -> None:
    async def agent_task(client: openai.AsyncOpenAI, name: str) -> None:
        async with tokentrail.agent(name):
            await asyncio.gather(
                *(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES) for _ in range(2))
            )

    async def main() -> None:
        async with aclient() as client, tokentrail.run("parallel"):
            await asyncio.gather(agent_task(client, "a"), agent_task(client, "b"))

    asyncio.run(main())
    assert sorted(c["agent"] for c in recorded(db)) == ["a", "a", "b", "b"]


def test_calls_outside_any_run_belong_to_the_default_run(db: Path, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [call] = recorded(db)
    assert call["run"] == tokentrail.current_scope().run.name  # type: ignore[union-attr]
    assert call["run_id"] == tokentrail.current_scope().id


def test_decorated_scopes_nest_and_sum(db: Path, client: openai.OpenAI) -> None:
    @tokentrail.tool("lookup")
    def lookup() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    @tokentrail.agent("researcher")
    def research() -> None:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        lookup()

    with tokentrail.run("nested") as run:
        with tokentrail.step("gather"):
            research()
    calls = recorded(db)
    assert [(c["scope_path"], c["agent"], c["step"], c["tool"]) for c in calls] == [
        ("nested/gather/researcher", "researcher", "gather", None),
        ("nested/gather/researcher/lookup", "researcher", "gather", "lookup"),
    ]
    summary = run.summary()
    assert summary["total_calls"] == 2
    assert summary["total_tokens"] == sum(c["total_tokens"] for c in calls)
    assert summary["calls_by_model"] == {"gpt-4o": 1, "gpt-4o-mini": 1}
    assert summary["by_agent"]["researcher"]["calls"] == 2


def test_embeddings_without_usage_count_the_input_and_know_the_output(
    db: Path, client: openai.OpenAI, sim: Simulator
) -> None:
    # An embedding generates nothing: without usage its output is still 0 (from the empty text),
    # and its input is counted from the request, as the provider would have reported it.
    fault = {"X-Sim-Fault": "nousage"}
    client.embeddings.create(model="text-embedding-3-small", input="hello world", extra_headers=fault)
    [call] = recorded(db)
    assert (call["input_tokens"], call["input_source"]) == (sim.served[-1].input_tokens, "counted")
    assert (call["output_tokens"], call["output_source"], call["usage_source"]) == (0, "counted", "counted")


def test_an_http_error_to_a_stream_request_is_not_also_a_cut_stream(db: Path, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"X-Sim-Fault": "429*1"}
    )
    for _ in stream:
        pass
    failed, ok = recorded(db)
    assert (failed["status"], failed["flags"]) == ("http_error", ["http_error"])
    assert (ok["status"], ok["flags"]) == ("ok", [])
