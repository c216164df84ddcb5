"""The call site: the first stack frame outside tokentrail, the HTTP library and the LLM SDK.

The hot path only walks frames and keeps ``(code, instruction offset)``; finding the line and naming
the frame (module, relative file) happen later, off the caller's thread. Whether a frame is skipped
is decided once per module.
"""

from __future__ import annotations

import functools
import os
import sys
from types import CodeType, FrameType

from tokentrail.records import CallSite

# Top-level packages whose frames are plumbing between the code that asked for a call and the wire:
# HTTP libraries, provider SDKs, the async machinery, and stdlib wrappers. Libraries built *on* SDKs
# (mem0, instructor, langchain, dspy) are deliberately absent: naming them is the point.
SKIPPED = frozenset(
    {
        "tokentrail",
        "httpx",
        "httpx2",
        "httpcore",
        "h11",
        "h2",
        "anyio",
        "sniffio",
        "asyncio",
        "concurrent",
        "threading",
        "contextlib",
        "functools",
        "contextvars",
        "runpy",
        "openai",
        "anthropic",
        "google.genai",
        "google.generativeai",
        "google.auth",
        "google.api_core",
        "mistralai",
        "cohere",
        "groq",
        "ollama",
        "together",
        "fireworks",
        "cerebras",
        "voyageai",
        "litellm",
        "requests",
        "urllib3",
        "aiohttp",
        "botocore",
        "boto3",
        "aiobotocore",
        "tenacity",
        "backoff",
        "wrapt",
        "typing_extensions",
        "pydantic",
        "pydantic_core",
        # Other vendors' instrumentation wrappers sit between the caller and the SDK.
        "opentelemetry",
        "openinference",
        "traceloop",
        "langfuse",
        "logfire",
        "sentry_sdk",
        "ddtrace",
    }
)

_skipped: dict[str | None, bool] = {}
"""Whether a module (by ``__name__``) is plumbing. Looked up by the frame's module name, a string
whose hash is kept: per frame ~100 ns less than a cache by code object, which needs ``id()`` (hashing
a code object hashes its bytecode and constants) and a check that the id was not reused."""


def _is_skipped(module: str) -> bool:
    if module.startswith("tokentrail.demo"):  # the demo stands for user code
        return False
    head = module.partition(".")[0]
    if head in SKIPPED:
        return True
    if head == "google":
        return ".".join(module.split(".")[:2]) in SKIPPED
    return False


def capture_above(depth: int) -> tuple[CodeType, int] | None:
    """The code object and instruction offset (``f_lasti``) of the first frame that is not plumbing,
    starting ``depth`` frames above the caller's (tokentrail's own frames that are always there are
    skipped without being looked at: each frame looked at costs a frame object), or ``None``.
    The offset, not the line: a frame computes its line by scanning its code's line table."""
    try:
        frame: FrameType | None = sys._getframe(depth + 1)
    except ValueError:  # a shallower stack than the caller expected
        frame = sys._getframe(1)
    skipped = _skipped
    while frame is not None:
        module = frame.f_globals.get("__name__")
        skip = skipped.get(module)
        if skip is None:
            if len(skipped) >= 4096:  # a program that makes modules on the fly
                skipped.clear()
            skip = skipped[module] = _is_skipped(module or "")
        if not skip:
            return frame.f_code, frame.f_lasti
        frame = frame.f_back
    return None


@functools.lru_cache(maxsize=4096)
def _describe(filename: str) -> tuple[str, str]:
    """(module, relative file) for a source file, from the longest ``sys.path`` entry containing it."""
    path = os.path.abspath(filename)
    best = ""
    for entry in sys.path:
        entry = os.path.abspath(entry or os.getcwd())
        if path.startswith(entry + os.sep) and len(entry) > len(best):
            best = entry
    rel = path[len(best) + 1 :] if best else os.path.basename(path)
    module = rel[:-3] if rel.endswith(".py") else rel
    module = module.replace(os.sep, ".")
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    return module, rel


def resolve(site: tuple[CodeType, int] | None) -> CallSite | None:
    """Name a captured frame (once per code object and offset: a program calls from few places)."""
    if site is None:
        return None
    code, offset = site
    key = (id(code), offset)  # by id: hashing the code object would cost more than the lookup
    known = _names.get(key)
    if known is None or known[0] is not code:
        if len(_names) >= 4096:
            _names.clear()
        known = _names[key] = (code, _name(code, line_of(code, offset)))
    return known[1]


def line_of(code: CodeType, offset: int) -> int:
    """The source line of the instruction at ``offset`` (``f_lasti``), as ``frame.f_lineno`` gives it."""
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


_names: dict[tuple[int, int], tuple[CodeType, CallSite]] = {}


def _name(code: CodeType, line: int) -> CallSite:
    if code.co_filename.startswith("<"):
        return CallSite(module=code.co_filename, function=code.co_qualname, file=code.co_filename, line=line)
    module, rel = _describe(code.co_filename)
    return CallSite(module=module, function=code.co_qualname, file=rel, line=line)
