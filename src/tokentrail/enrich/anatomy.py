"""A prompt's anatomy: how many of its input tokens went to tools, tool results, system, history, the ask.

Computed after the response, off the caller's thread, from the request body alone, with the same walk
and tokenizer as `tokentrail.enrich.count.count_request` (one walk serves both). The parts:

- ``tool_definitions``: the offered tools' definitions (counted as their compact JSON, see `count`);
- ``tool_results``: tool-role messages, Anthropic ``tool_result`` blocks, Gemini ``functionResponse``
  parts, Responses ``function_call_output`` items;
- ``system``: system and developer messages, Anthropic ``system``, Gemini ``systemInstruction``,
  Responses ``instructions``, Cohere ``preamble``;
- ``latest_input``: the last user turn (the last user message that is not only tool results);
- ``history``: every other turn, earlier user turns and the assistant's, tool calls included.

Each message's hidden framing tokens count with its part; the tokens that prime the reply belong to no
part, so the parts add up to at most the counted input. ``tools_offered`` names the offered tools and
``tools_called`` the tool calls already in the request's history, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokentrail.usage import Source

from .count import UNKNOWN_TOOL, analyze

__all__ = ["UNKNOWN_TOOL", "Anatomy", "anatomy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Anatomy:
    """Where a request's input tokens went. Counts are tokens of `tokenizer`."""

    tool_definitions: int
    tool_results: int
    system: int
    history: int
    latest_input: int
    tools_offered: tuple[str, ...]
    tools_called: tuple[str, ...]
    tokenizer: str
    exact: bool
    """True when `tokenizer` is the model's own (the counts are ``counted``, else ``estimated``)."""
    input_tokens: int
    """The whole counted input; the parts add up to at most this (the reply's priming is in none)."""
    tool_definition_tokens_by_name: dict[str, int] = field(default_factory=dict[str, int])
    """Tokens of each tool's definition on its own; their sum can differ from `tool_definitions` by a
    few tokens where a family counts the whole list at once (the brackets and commas between them)."""
    tool_result_tokens_by_name: dict[str, int] = field(default_factory=dict[str, int])
    """Tokens of tool results per tool name (``"(unknown)"`` when the call is not in the request)."""

    def as_dict(self) -> dict[str, Any]:
        """The parts and tool names, for JSON: the keys a record stores.

        Beside the five parts and the tool names: ``tokenizer`` and ``source`` (``"counted"`` with the
        model's own tokenizer, else ``"estimated"``), and the per-tool-name token counts
        ``tool_definitions_by_name`` and ``tool_results_by_name`` that ``tokentrail report --by tool``
        sums per tool name.
        """
        return {
            "tool_definitions": self.tool_definitions,
            "tool_results": self.tool_results,
            "system": self.system,
            "history": self.history,
            "latest_input": self.latest_input,
            "tools_offered": list(self.tools_offered),
            "tools_called": list(self.tools_called),
            "tokenizer": self.tokenizer,
            "source": (Source.COUNTED if self.exact else Source.ESTIMATED).value,
            "tool_definitions_by_name": dict(self.tool_definition_tokens_by_name),
            "tool_results_by_name": dict(self.tool_result_tokens_by_name),
        }


def anatomy(api: str, body: bytes, model: str | None) -> Anatomy | None:
    """The anatomy of a request body, for the API families `count_request` counts; None otherwise.

    Never raises on bad input. `model` None reads the body's ``model``.
    """
    a = analyze(api, body, model)
    if a is None:
        return None
    by_definition: dict[str, int] = {}
    for name, text in a.tool_definitions:
        by_definition[name] = by_definition.get(name, 0) + a.tokenizer.count(text)
    parts = a.parts
    return Anatomy(
        tool_definitions=parts["tool_definitions"],
        tool_results=parts["tool_results"],
        system=parts["system"],
        history=parts["history"],
        latest_input=parts["latest_input"],
        tools_offered=a.tools_offered,
        tools_called=a.tools_called,
        tokenizer=a.tokenizer.name,
        exact=a.tokenizer.exact,
        input_tokens=a.input_tokens,
        tool_definition_tokens_by_name=by_definition,
        tool_result_tokens_by_name=dict(a.tool_results_by_name),
    )
