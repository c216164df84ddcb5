"""OpenAI-compatible servers' quirks (`openai_compat`), watsonx and TGI parsers, and the generic fallback.

The OpenAI parsers read the bodies; `refine` re-reads their raw usage with the server's meaning, and
`reported_cost` keeps a provider's own price as an exact Decimal.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.records import Flag
from tokentrail.usage import Provenance, Source, Usage
from tokentrail.wire import generic, openai_compat
from tokentrail.wire._base import ParsedCall, StreamOutcome, WholeBody
from tokentrail.wire.generic import GENERIC
from tokentrail.wire.openai_chat import CHAT, COMPLETIONS, EMBEDDINGS, ChatStream
from tokentrail.wire.openai_compat import (
    TGI_GENERATE,
    TGI_GENERATE_STREAM,
    WATSONX_CHAT,
    WATSONX_CHAT_STREAM,
    WATSONX_EMBEDDINGS,
    WATSONX_GENERATION,
    WATSONX_GENERATION_STREAM,
    compat_usage,
    refine,
    reported_cost,
    stream_usage,
)
from tokentrail.wire.openai_responses import RESPONSES

from ..strategies import splits

REPORTED = Provenance(input=Source.REPORTED, output=Source.REPORTED)
MISSING = Provenance()
PARTIAL = Provenance(input=Source.PARTIAL, output=Source.PARTIAL)
PAYLOADS = Path(__file__).parent.parent / "payloads" / "openai_compat"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def chat_body(usage: Any, model: str = "m") -> bytes:
    choices = [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]
    return dumps({"id": "c1", "object": "chat.completion", "model": model, "choices": choices, "usage": usage})


def feed_all(parser: Any, pieces: list[bytes], outcome: StreamOutcome = StreamOutcome.COMPLETE) -> ParsedCall:
    for piece in pieces:
        parser.feed(piece)
    return parser.finish(outcome)


def refined(usage: Any, provider: str | None = None) -> ParsedCall:
    return refine(CHAT.parse(chat_body(usage)), provider, "openai.chat")


# -- DeepSeek ----------------------------------------------------------------------------------------------


def test_deepseek_cache_hit_is_the_cache_read() -> None:
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 52,
        "total_tokens": 1252,
        "prompt_cache_hit_tokens": 1024,
        "prompt_cache_miss_tokens": 176,
    }
    result = refined(usage, "deepseek")
    assert result.usage == Usage(input_tokens=1200, output_tokens=52, cache_read_tokens=1024)
    assert (result.flags, result.provenance, result.raw_usage) == (frozenset(), REPORTED, usage)
    # Decided by the fields themselves, whatever the host.
    assert refined(usage).usage == result.usage


def test_deepseek_hit_and_miss_that_do_not_sum_to_prompt() -> None:
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 52,
        "total_tokens": 1252,
        "prompt_cache_hit_tokens": 1024,
        "prompt_cache_miss_tokens": 100,
    }
    assert refined(usage, "deepseek").flags == {Flag.TOTAL_MISMATCH}


def test_deepseek_reasoning_is_part_of_completion() -> None:
    usage = {
        "prompt_tokens": 13,
        "completion_tokens": 530,
        "total_tokens": 543,
        "completion_tokens_details": {"reasoning_tokens": 480},
    }
    assert refined(usage, "deepseek").usage == Usage(input_tokens=13, output_tokens=530, reasoning_tokens=480)


# -- xAI and Perplexity: reasoning and citations on top ---------------------------------------------------


def test_xai_reasoning_is_added_to_completion() -> None:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 1,
        "total_tokens": 399,
        "completion_tokens_details": {"reasoning_tokens": 386},
    }
    for provider in ("xai", None):  # the provider's own total shows it, whatever the host
        result = refined(usage, provider)
        assert result.usage == Usage(input_tokens=12, output_tokens=387, reasoning_tokens=386)
        assert result.usage.total_tokens == 399
        assert result.flags == frozenset()
    # The plain OpenAI reading gets it wrong: that is what refine is for.
    assert CHAT.parse(chat_body(usage)).flags == {Flag.TOTAL_MISMATCH, Flag.PARTS_EXCEED_WHOLE}


def test_xai_without_a_total_goes_by_provider() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 1, "completion_tokens_details": {"reasoning_tokens": 386}}
    assert refined(usage, "xai").usage.output_tokens == 387
    assert refined(usage, "openai").flags == {Flag.PARTS_EXCEED_WHOLE}


def test_a_total_that_includes_reasoning_once_is_openai_semantics() -> None:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 400,
        "total_tokens": 412,
        "completion_tokens_details": {"reasoning_tokens": 386},
    }
    assert refined(usage, "xai").usage == Usage(input_tokens=12, output_tokens=400, reasoning_tokens=386)


def test_perplexity_citations_are_input_and_reasoning_is_output() -> None:
    usage = {
        "prompt_tokens": 500,
        "completion_tokens": 200,
        "total_tokens": 950,
        "citation_tokens": 100,
        "reasoning_tokens": 150,
        "num_search_queries": 3,
    }
    result = refined(usage, "perplexity")
    assert result.usage == Usage(input_tokens=600, output_tokens=350, reasoning_tokens=150)
    assert result.flags == frozenset()
    no_total = {k: v for k, v in usage.items() if k != "total_tokens"}
    assert refined(no_total, "perplexity").usage == result.usage
    assert refined(no_total, None).usage == Usage(input_tokens=500, output_tokens=200, reasoning_tokens=150)


def test_perplexity_citations_only() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 60, "citation_tokens": 30}
    assert refined(usage).usage == Usage(input_tokens=40, output_tokens=20)


def test_a_total_that_fits_nothing_is_flagged() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 31,
        "citation_tokens": 30,
        "reasoning_tokens": 5,
    }
    result = refined(usage, "perplexity")
    assert result.usage == Usage(input_tokens=10, output_tokens=20, reasoning_tokens=5)
    assert result.flags == {Flag.TOTAL_MISMATCH}


@settings(max_examples=100)
@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**5),
    st.integers(0, 10**5),
    st.sampled_from([None, "xai", "perplexity", "openai"]),
)
def test_compat_usage_keeps_the_conventions(
    prompt: int, completion: int, reasoning: int, citation: int, provider: str | None
) -> None:
    """Whatever the reading, a usage that matches its provider's total keeps total = input + output."""
    for total in (prompt + completion, prompt + completion + reasoning, prompt + completion + reasoning + citation):
        raw = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
            "citation_tokens": citation,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
        usage, provenance, flags = compat_usage(raw, provider)
        assert provenance == REPORTED
        if Flag.TOTAL_MISMATCH not in flags:
            assert usage.total_tokens == total
        assert usage.input_tokens is not None and usage.input_tokens >= prompt
        assert usage.output_tokens is not None and usage.output_tokens >= completion


# -- refine: what it leaves alone ------------------------------------------------------------------------------


def test_refine_keeps_plain_openai_usage_as_is() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 10},
    }
    plain = CHAT.parse(chat_body(usage))
    assert refine(plain, "openai", "openai.chat") is plain
    jina = EMBEDDINGS.parse(
        dumps(
            {
                "object": "list",
                "data": [],
                "model": "jina-embeddings-v3",
                "usage": {"total_tokens": 8, "prompt_tokens": 8},
            }
        )
    )
    assert refine(jina, "jina", "openai.embeddings") is jina
    assert jina.usage == Usage(input_tokens=8, output_tokens=0)


def test_refine_leaves_responses_usage_and_missing_usage_alone() -> None:
    body = dumps(
        {
            "id": "r",
            "object": "response",
            "model": "m",
            "output": [],
            "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
        }
    )
    result = RESPONSES.parse(body)
    assert refine(result, "xai", "openai.responses") is result
    empty = CHAT.parse(chat_body(None))
    assert refine(empty, "xai", "openai.chat") is empty


def test_refine_keeps_a_stream_partial() -> None:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 1,
        "total_tokens": 399,
        "completion_tokens_details": {"reasoning_tokens": 386},
    }
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "grok-3-mini",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
        "usage": usage,
    }
    result = refine(
        feed_all(ChatStream(), [b"data: " + dumps(chunk) + b"\n\n"], StreamOutcome.BROKEN), "xai", "openai.chat"
    )
    assert result.usage.output_tokens == 387
    assert (result.provenance, result.flags, result.complete) == (PARTIAL, {Flag.STREAM_INCOMPLETE}, False)


def test_refine_voyage_embeddings() -> None:
    body = dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "embedding": [0.1], "index": 0}],
            "model": "voyage-3.5",
            "usage": {"total_tokens": 10},
        }
    )
    plain = EMBEDDINGS.parse(body)
    assert plain.usage == Usage(output_tokens=0)  # the OpenAI reading finds no prompt_tokens
    result = refine(plain, "voyage", "openai.embeddings")
    assert result.usage == Usage(input_tokens=10, output_tokens=0)
    assert (result.provenance, result.raw_usage, result.model) == (REPORTED, {"total_tokens": 10}, "voyage-3.5")
    bad = refine(EMBEDDINGS.parse(body.replace(b"10}", b"-1}")), None, "openai.embeddings")
    assert (bad.usage.input_tokens, bad.flags) == (None, {Flag.INVALID_VALUE})


# -- reported cost --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "cost"),
    [
        ({"cost": 0.95}, Decimal("0.95")),
        ({"cost": 0.00042}, Decimal("0.00042")),
        ({"cost": 0.1 + 0.2}, Decimal("0.30000000000000004")),  # the float as sent, not rounded
        ({"cost": 2}, Decimal(2)),
        ({"cost": "0.0125"}, Decimal("0.0125")),
        ({"cost": 0}, Decimal(0)),
        (
            {"cost": 0.0000125, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.00025}},
            Decimal("0.0002625"),
        ),
        ({"cost": 0.95, "is_byok": False, "cost_details": {"upstream_inference_cost": 19}}, Decimal("0.95")),
        ({"cost": {"input_tokens_cost": 0.0012, "total_cost": 0.01845}}, Decimal("0.01845")),
        ({"cost": -0.1}, None),
        ({"cost": True}, None),
        ({"cost": float("nan")}, None),
        ({"cost": float("inf")}, None),
        ({"cost": "free"}, None),
        ({"cost": None}, None),
        ({"cost": [0.1]}, None),
        ({"cost": {"total": 1}}, None),
        ({}, None),
    ],
)
def test_reported_cost(usage: dict[str, Any], cost: Decimal | None) -> None:
    assert reported_cost(usage) == cost
    if cost is not None:
        assert isinstance(reported_cost(usage), Decimal)


def test_reported_cost_of_non_objects() -> None:
    for raw in (None, 0.5, "0.5", [1]):
        assert reported_cost(raw) is None


# -- Groq streams ------------------------------------------------------------------------------------------


GROQ_USAGE = {
    "queue_time": 0.075,
    "prompt_tokens": 23,
    "prompt_time": 0.006,
    "completion_tokens": 19,
    "completion_time": 0.022,
    "total_tokens": 42,
    "total_time": 0.028,
}
GROQ_LAST = {
    "id": "chatcmpl-8566e76f",
    "object": "chat.completion.chunk",
    "model": "llama3-8b-8192",
    "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
    "x_groq": {"id": "req_01", "usage": GROQ_USAGE},
}


def test_stream_usage_reads_groq() -> None:
    assert stream_usage(GROQ_LAST) == GROQ_USAGE
    assert stream_usage({"usage": {"prompt_tokens": 1}, "x_groq": {"usage": GROQ_USAGE}}) == {"prompt_tokens": 1}
    assert stream_usage({"usage": None}) is None
    assert stream_usage({"x_groq": {"id": "req"}}) is None
    assert stream_usage({"usage": "bad"}) == "bad"  # kept, so read_usage flags it


def test_chat_stream_reads_groq_usage() -> None:
    first = {
        **GROQ_LAST,
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
        "x_groq": {"id": "req_01"},
    }
    raw = b"data: " + dumps(first) + b"\n\ndata: " + dumps(GROQ_LAST) + b"\n\ndata: [DONE]\n\n"
    assert feed_all(CHAT.stream(), [raw]).usage == Usage(input_tokens=23, output_tokens=19)


# -- watsonx -------------------------------------------------------------------------------------------------


def test_watsonx_generation() -> None:
    body = {
        "model_id": "ibm/granite-13b-instruct-v2",
        "results": [
            {"generated_text": "x", "generated_token_count": 5, "input_token_count": 50, "stop_reason": "eos_token"}
        ],
    }
    result = WATSONX_GENERATION.parse(dumps(body))
    assert result.usage == Usage(input_tokens=50, output_tokens=5)
    assert (result.model, result.provenance) == ("ibm/granite-13b-instruct-v2", REPORTED)
    assert result.raw_usage == {"results": [{"input_token_count": 50, "generated_token_count": 5}]}


def test_watsonx_generation_invalid_and_missing() -> None:
    body = {"model_id": "m", "results": [{"generated_token_count": "5", "input_token_count": 50}]}
    result = WATSONX_GENERATION.parse(dumps(body))
    assert (result.usage, result.flags) == (Usage(input_tokens=50), {Flag.INVALID_VALUE})
    assert WATSONX_GENERATION.parse(dumps({"errors": [{"code": "x"}]})).usage == Usage()


def watsonx_events(*, last: bool = True) -> bytes:
    events = [
        {
            "model_id": "ibm/granite",
            "results": [
                {
                    "generated_text": "Sw",
                    "generated_token_count": 2,
                    "input_token_count": 50,
                    "stop_reason": "not_finished",
                }
            ],
        },
        {
            "model_id": "ibm/granite",
            "results": [
                {
                    "generated_text": "im",
                    "generated_token_count": 3,
                    "input_token_count": 50,
                    "stop_reason": "not_finished",
                }
            ],
        },
    ]
    if last:
        events.append(
            {
                "model_id": "ibm/granite",
                "results": [
                    {
                        "generated_text": "!",
                        "generated_token_count": 5,
                        "input_token_count": 50,
                        "stop_reason": "max_tokens",
                    }
                ],
            }
        )
    return b"".join(b"id: %d\nevent: message\ndata: " % i + dumps(e) + b"\n\n" for i, e in enumerate(events, 1))


def test_watsonx_generation_stream() -> None:
    result = feed_all(WATSONX_GENERATION_STREAM.stream(), [watsonx_events()])
    assert result.usage == Usage(input_tokens=50, output_tokens=5)  # running counts: the last wins
    assert (result.model, result.complete, result.flags) == ("ibm/granite", True, frozenset())
    cut = feed_all(WATSONX_GENERATION_STREAM.stream(), [watsonx_events(last=False)], StreamOutcome.BROKEN)
    assert (cut.usage, cut.provenance, cut.flags) == (
        Usage(input_tokens=50, output_tokens=3),
        PARTIAL,
        {Flag.STREAM_INCOMPLETE},
    )
    assert WATSONX_GENERATION_STREAM.parse(watsonx_events()) == result


def test_watsonx_chat_and_embeddings() -> None:
    body = {
        "id": "chat-1",
        "model_id": "meta-llama/llama-3-3-70b-instruct",
        "choices": [],
        "usage": {"completion_tokens": 3, "prompt_tokens": 50, "total_tokens": 53},
    }
    result = WATSONX_CHAT.parse(dumps(body))
    assert (result.usage, result.model) == (
        Usage(input_tokens=50, output_tokens=3),
        "meta-llama/llama-3-3-70b-instruct",
    )
    assert isinstance(WATSONX_CHAT_STREAM.stream(), ChatStream)
    emb = WATSONX_EMBEDDINGS.parse(
        dumps({"model_id": "ibm/slate-30m-english-rtrvr", "results": [{"embedding": [0.1]}], "input_token_count": 10})
    )
    assert (emb.usage, emb.model, emb.raw_usage) == (
        Usage(input_tokens=10, output_tokens=0),
        "ibm/slate-30m-english-rtrvr",
        {"input_token_count": 10},
    )
    assert WATSONX_EMBEDDINGS.parse(b"{}").usage == Usage()
    assert isinstance(WATSONX_EMBEDDINGS.stream(), WholeBody)


def test_watsonx_requests() -> None:
    body = dumps({"model_id": "ibm/granite-13b-instruct-v2", "input": "x", "project_id": "p"})
    assert (WATSONX_GENERATION.parse_request(body).model, WATSONX_GENERATION.parse_request(body).stream) == (
        "ibm/granite-13b-instruct-v2",
        False,
    )
    assert WATSONX_GENERATION_STREAM.parse_request(body).stream is True
    assert WATSONX_CHAT_STREAM.parse_request(body).stream is True


# -- text-generation-inference -----------------------------------------------------------------------------


def test_tgi_generate() -> None:
    body: dict[str, Any] = {
        "generated_text": "x",
        "details": {"finish_reason": "length", "generated_tokens": 20, "seed": None, "prefill": [], "tokens": []},
    }
    result = TGI_GENERATE.parse(dumps(body))
    # No prompt count unless the request asked for decoder_input_details.
    assert result.usage == Usage(output_tokens=20)
    assert result.provenance == Provenance(input=Source.MISSING, output=Source.REPORTED)
    body["details"]["prefill"] = [{"id": 1, "text": "<s>"}, {"id": 2, "text": "Hi"}]
    assert TGI_GENERATE.parse(dumps(body)).usage == Usage(input_tokens=2, output_tokens=20)
    body["details"]["best_of_sequences"] = [{"generated_tokens": 7}]
    assert TGI_GENERATE.parse(dumps([body])).usage.output_tokens == 27  # the Inference API's list form
    assert TGI_GENERATE.parse(dumps({"generated_text": "x"})).usage == Usage()  # no "details" requested


def tgi_events(*, last: bool = True) -> bytes:
    events: list[dict[str, Any]] = [
        {
            "index": 1,
            "token": {"id": 17, "text": " Deep", "logprob": -1.2, "special": False},
            "generated_text": None,
            "details": None,
        },
        {
            "index": 2,
            "token": {"id": 6975, "text": " learning", "logprob": -0.5, "special": False},
            "generated_text": None,
            "details": None,
        },
    ]
    if last:
        events.append(
            {
                "index": 3,
                "token": {"id": 13, "text": ".", "logprob": -0.1, "special": False},
                "generated_text": " Deep learning.",
                "details": {"finish_reason": "eos_token", "generated_tokens": 3, "seed": None},
            }
        )
    return b"".join(b"data:" + dumps(e) + b"\n\n" for e in events)


def test_tgi_stream() -> None:
    result = feed_all(TGI_GENERATE_STREAM.stream(), [tgi_events()])
    assert (result.usage, result.complete) == (Usage(output_tokens=3), True)
    cut = feed_all(TGI_GENERATE_STREAM.stream(), [tgi_events(last=False)], StreamOutcome.CLOSED_EARLY)
    assert (cut.usage, cut.flags, cut.complete) == (Usage(), {Flag.STREAM_INCOMPLETE}, False)
    error = feed_all(
        TGI_GENERATE_STREAM.stream(),
        [tgi_events(last=False) + b'data:{"error":"Input validation error","error_type":"validation"}\n\n'],
    )
    assert error.complete is False
    assert TGI_GENERATE_STREAM.parse(tgi_events()) == result
    assert TGI_GENERATE_STREAM.parse_request(dumps({"inputs": "x"})).stream is True
    assert TGI_GENERATE.parse_request(dumps({"inputs": "x", "stream": True})).stream is True


# -- any split --------------------------------------------------------------------------------------------

_STREAMS: dict[str, tuple[Any, bytes]] = {
    "watsonx": (WATSONX_GENERATION_STREAM, watsonx_events()),
    "watsonx-cut": (WATSONX_GENERATION_STREAM, watsonx_events(last=False)),
    "tgi": (TGI_GENERATE_STREAM, tgi_events()),
}


@pytest.mark.parametrize("name", list(_STREAMS))
def test_every_two_way_split_gives_the_same_record(name: str) -> None:
    parser, raw = _STREAMS[name]
    whole = feed_all(parser.stream(), [raw])
    for i in range(1, len(raw)):
        assert feed_all(parser.stream(), [raw[:i], raw[i:]]) == whole, i


@settings(max_examples=30)
@given(st.data(), st.sampled_from(list(_STREAMS)), st.sampled_from(list(StreamOutcome)))
def test_any_split_gives_the_same_record(data: st.DataObject, name: str, outcome: StreamOutcome) -> None:
    parser, raw = _STREAMS[name]
    assert feed_all(parser.stream(), data.draw(splits(raw, allow_empty=True)), outcome) == feed_all(
        parser.stream(), [raw], outcome
    )


@pytest.mark.parametrize(
    ("path", "parser"),
    [
        ("/ml/v1/text/generation", WATSONX_GENERATION),
        ("/ml/v1/text/generation_stream", WATSONX_GENERATION_STREAM),
        ("/ml/v1/text/chat", WATSONX_CHAT),
        ("/ml/v1/text/chat_stream", WATSONX_CHAT_STREAM),
        ("/ml/v1/text/embeddings", WATSONX_EMBEDDINGS),
        ("/generate", TGI_GENERATE),
        ("/models/bigscience/bloom/generate", TGI_GENERATE),
        ("/generate_stream", TGI_GENERATE_STREAM),
        ("/api/generate", None),  # Ollama's
        ("/ml/v1/text/tokenization", None),
        ("/v1/chat/completions", None),
    ],
)
def test_matches(path: str, parser: Any) -> None:
    assert [p for p in openai_compat.PARSERS if p.matches("POST", path)] == ([parser] if parser else [])
    if parser is not None:
        assert path.endswith(openai_compat.SUFFIXES)


# -- generic ----------------------------------------------------------------------------------------------


def test_generic_model_from_json_and_multipart() -> None:
    assert GENERIC.parse_request(dumps({"model": "tts-1", "input": "hi", "voice": "alloy"})).model == "tts-1"
    multipart = (
        b'--boundary\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n'
        + b"Content-Type: audio/mpeg\r\n\r\n"
        + bytes(range(256)) * 40
        + b'\r\n--boundary\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        + b'--boundary\r\nContent-Disposition: form-data; name="stream"\r\n\r\ntrue\r\n--boundary--\r\n'
    )
    info = GENERIC.parse_request(multipart)
    assert (info.model, info.stream) == ("whisper-1", True)
    assert GENERIC.parse_request(b"").model is None
    assert GENERIC.parse_request(b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n--b--').model is None


def test_generic_usage() -> None:
    transcription = {
        "text": "x",
        "usage": {
            "type": "tokens",
            "input_tokens": 14,
            "input_token_details": {"audio_tokens": 14},
            "output_tokens": 45,
            "total_tokens": 59,
        },
    }
    result = GENERIC.parse(dumps(transcription))
    assert (result.usage, result.provenance) == (Usage(input_tokens=14, output_tokens=45), REPORTED)
    whisper = GENERIC.parse(dumps({"text": "x", "usage": {"type": "duration", "seconds": 3}}))
    assert (whisper.usage, whisper.provenance, whisper.raw_usage, whisper.flags) == (
        Usage(),
        MISSING,
        {"type": "duration", "seconds": 3},
        frozenset(),
    )
    for body in (
        b"ID3\x03\x00\x00\x00binary mp3",
        b"",
        dumps({"id": "modr-1", "results": []}),
        b"\xff\xfb\x90" * 50_000,
    ):
        assert (GENERIC.parse(body).usage, GENERIC.parse(body).provenance) == (Usage(), MISSING)
    assert GENERIC.matches("POST", "/v1/audio/transcriptions") and not GENERIC.matches("GET", "/v1/files")
    assert (GENERIC.api, generic.SUFFIXES) == ("unknown", ())


def test_generic_stream() -> None:
    events = b"".join(
        b"data: " + dumps({"type": "transcript.text.delta", "delta": "word "}) + b"\n\n" for _ in range(2000)
    )
    done = (
        b"data: "
        + dumps(
            {
                "type": "transcript.text.done",
                "text": "…",
                "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 45, "total_tokens": 59},
            }
        )
        + b"\n\n"
    )
    result = feed_all(GENERIC.stream(), [events, done])
    assert (result.usage, result.complete) == (Usage(input_tokens=14, output_tokens=45), True)
    cut = feed_all(GENERIC.stream(), [events], StreamOutcome.BROKEN)
    assert (cut.usage, cut.flags, cut.complete) == (Usage(), {Flag.STREAM_INCOMPLETE}, False)
    audio = feed_all(GENERIC.stream(), [bytes(range(256)) * 500])
    assert (audio.usage, audio.flags) == (Usage(), frozenset())


# -- golden corpus ----------------------------------------------------------------------------------------

_CASES: dict[str, tuple[Any, str | None, str]] = {
    "deepseek": (CHAT, "deepseek", "openai.chat"),
    "xai": (CHAT, "xai", "openai.chat"),
    "perplexity": (CHAT, "perplexity", "openai.chat"),
    "openrouter": (CHAT, "openrouter", "openai.chat"),
    "groq": (CHAT, "groq", "openai.chat"),
    "anthropic": (CHAT, "anthropic", "openai.chat"),
    "mistral": (COMPLETIONS, "mistral", "openai.completions"),
    "voyage": (EMBEDDINGS, "voyage", "openai.embeddings"),
    "jina": (EMBEDDINGS, "jina", "openai.embeddings"),
    "watsonx_generation": (WATSONX_GENERATION, None, ""),
    "watsonx_chat": (WATSONX_CHAT, None, ""),
    "watsonx_embeddings": (WATSONX_EMBEDDINGS, None, ""),
    "tgi_generate": (TGI_GENERATE, None, ""),
    "generic": (GENERIC, None, ""),
}
_STREAM_PARSERS: dict[Any, Any] = {WATSONX_GENERATION: WATSONX_GENERATION_STREAM, TGI_GENERATE: TGI_GENERATE_STREAM}

KNOWN_BUGS: dict[str, str] = {}


def normalized(result: ParsedCall) -> dict[str, Any]:
    cost = reported_cost(result.raw_usage)
    return {
        "model": result.model,
        "usage": result.usage.as_dict(),
        "provenance": {"input": result.provenance.input.value, "output": result.provenance.output.value},
        "flags": sorted(result.flags),
        "reported_cost": None if cost is None else str(cost),
    }


def derive(path: Path) -> list[tuple[str, dict[str, Any]]]:
    key = max((k for k in _CASES if path.name.startswith(k)), key=len)
    parser, provider, api = _CASES[key]
    raw = path.read_bytes()

    def done(result: ParsedCall) -> dict[str, Any]:
        return normalized(refine(result, provider, api) if api.startswith("openai.") else result)

    if path.suffix == ".json":
        return [("parse", done(parser.parse(raw)))]
    parser = _STREAM_PARSERS.get(parser, parser)
    out = []
    for how, size in (("whole", len(raw)), ("7-byte pieces", 7)):
        out.append((how, done(feed_all(parser.stream(), [raw[i : i + size] for i in range(0, len(raw), size)]))))
    return out


def _golden() -> list[Any]:
    params = []
    for path in sorted(PAYLOADS.iterdir()):
        if path.suffix not in (".json", ".sse") or path.name.endswith(".expected.json"):
            continue
        stem = path.name.split(".")[0]
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[stem])] if stem in KNOWN_BUGS else []
        params.append(pytest.param(path, id=path.name, marks=marks))
    return params


GOLDEN = _golden()


@pytest.mark.parametrize("path", GOLDEN)
def test_golden(path: Path) -> None:
    expected_path = path.with_name(path.name.split(".")[0] + ".expected.json")
    results = derive(path)
    if os.environ.get("UPDATE_GOLDEN") == "1" and path.name.split(".")[0] not in KNOWN_BUGS:
        expected_path.write_text(json.dumps(results[0][1], indent=2) + "\n")
    expected = json.loads(expected_path.read_text())
    for how, got in results:
        assert got == expected, how


def test_golden_corpus_is_complete() -> None:
    assert len(GOLDEN) >= 20
    stems = {p.values[0].name.split(".")[0] for p in GOLDEN}
    assert stems == {p.name.removesuffix(".expected.json") for p in PAYLOADS.glob("*.expected.json")}
    sources = (PAYLOADS / "SOURCE.md").read_text()
    assert all(f"- SOURCE {stem}:" in sources for stem in stems), stems
