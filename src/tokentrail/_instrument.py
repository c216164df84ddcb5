"""`instrument()` and friends: turning capture on and off, flushing, subscribing."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any, Literal

from tokentrail._guard import guard
from tokentrail.sinks import pipeline

_lock = threading.Lock()
_db: Path | None = None
_saved_env: dict[str, str | None] = {}


def ledger_path() -> Path | None:
    """The ledger capture writes to, or ``None`` when capture is off."""
    return _db


class Instrumentation:
    """Returned by `instrument()`; also a context manager that uninstruments on exit (for tests)."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        uninstrument()

    def __repr__(self) -> str:
        return f"<tokentrail instrumentation db={str(self.db)!r}>"


def instrument(
    db: str | os.PathLike[str] | None = None,
    *,
    children: bool = True,
    anatomy: bool | None = None,
    stream_usage: Literal["inject"] | None = None,
) -> Instrumentation:
    """Record every LLM HTTP call this process makes, from now on, into the ledger ``db``.

    Hooks ``httpx`` and ``httpx2`` clients (sync and async, clients created earlier included) and
    carries scopes into threads. Idempotent: a second call with the same ledger does nothing; with
    another ledger, it flushes and switches. Records are written by a background thread and flushed
    at exit and on SIGTERM.

    Args:
        db: the SQLite ledger; default ``$TOKENTRAIL_DB``, else ``./tokentrail.db``.
        children: also capture in Python child processes (``multiprocessing`` spawn and forkserver
            workers, ``subprocess``): sets ``TOKENTRAIL_AUTO``, ``TOKENTRAIL_DB`` and ``PYTHONPATH``
            in this process's environment, as ``tokentrail run`` does. Forked children always
            inherit capture.
        anatomy: record each prompt's anatomy (tokens spent on tool definitions, tool results,
            system prompt, earlier turns and the latest input; tools offered and called). Computed
            after the response, off the caller's thread; default ``$TOKENTRAIL_ANATOMY``, else off.
        stream_usage: ``"inject"`` asks OpenAI-compatible streams that did not ask for usage to
            report it (``stream_options.include_usage``) and hides the extra usage chunk from the
            caller, so the application sees the stream it would have seen; an endpoint that rejects
            the option gets the original request. Default ``$TOKENTRAIL_STREAM_USAGE``, else off.

    Raises:
        StoreError: the ledger cannot be opened or created, or the file is not a ledger (checked
            here, before any call is made). A ledger another process holds locked is not an
            error: it is not waited for here, and the writer uses it once the lock is free.
        ConfigError: a price override file (``tokentrail.toml``, ``[tool.tokentrail]``) is invalid,
            or ``stream_usage`` is not None or ``"inject"``.
    """
    global _db
    from tokentrail import capture, config, integrations, pricing, propagate
    from tokentrail.capture import inject
    from tokentrail.enrich.price import priced
    from tokentrail.sinks.sqlite import SqliteSink

    path = config.db_path(db).resolve()
    inject.configure(stream_usage if stream_usage is not None else os.environ.get("TOKENTRAIL_STREAM_USAGE") or None)
    pricing.configure()  # a bad tokentrail.toml raises ConfigError here, in the caller
    # Import what the background writer will need now, on the caller's thread: an import running
    # in the writer leaves half-initialised modules (httpx2, via genai-prices) in sys.modules, and
    # openai 2.x reads sys.modules["httpx2"] on every request.
    import genai_prices.data
    import genai_prices.data_snapshot  # noqa: F401

    from tokentrail.enrich import count, tokenizers  # noqa: F401

    tokenizers.preimport()
    with _lock:
        pipeline.pricer = priced
        pipeline.anatomy_on = anatomy if anatomy is not None else os.environ.get("TOKENTRAIL_ANATOMY") == "1"
        if _db != path:
            sink = SqliteSink(path)
            for old in pipeline.remove_sinks():
                with guard("sink.close"):
                    old.close()
            pipeline.add_sink(sink)
            _db = path
        capture.install()
        propagate.install()
        integrations.install()  # framework names (LangChain, Agents SDK, pydantic-ai, CrewAI): never records
        _flush_on_sigterm()
        if children:
            from tokentrail.cli.run import environment

            for key, value in environment(str(path), None).items():
                _saved_env.setdefault(key, os.environ.get(key))
                os.environ[key] = value
    return Instrumentation(path)


def uninstrument() -> None:
    """Stop recording: unhook the HTTP libraries and threads, flush and close the ledger."""
    global _db
    from tokentrail import capture, integrations, propagate

    with _lock:
        capture.uninstall()
        propagate.uninstall()
        integrations.uninstall()
        for sink in pipeline.remove_sinks():
            with guard("sink.close"):
                sink.close()
        _db = None
        for key, value in _saved_env.items():  # children started from now on are not captured
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _saved_env.clear()


def flush() -> None:
    """Write every record captured so far to the ledger; returns when they are stored."""
    pipeline.flush()


def subscribe(callback: Any) -> Any:
    """Call ``callback(record: CallRecord)`` for every finished call; returns an unsubscribe function.

    Runs after the response, off the caller's thread; an exception in the callback is caught.
    """
    return pipeline.subscribe(callback)


_SIGTERM_SENTINEL = "__tokentrail_sigterm__"


def _flush_on_sigterm() -> None:
    """Flush before the process dies of SIGTERM, then let the previous disposition act."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or getattr(previous, _SIGTERM_SENTINEL, False):
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        def then() -> None:
            if callable(previous):
                previous(signum, frame)
            else:
                # The process dies now, without exit handlers: what could not be written is said.
                with guard("flush.signal"):
                    pipeline.drop_unwritten("the process was ended by SIGTERM")
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        # Not flush(): the signal may land inside a flush of this same thread (a pool worker's last
        # one, which Pool.terminate() interrupts), whose locks it would wait for forever.
        pipeline.flush_then(then)

    setattr(on_sigterm, _SIGTERM_SENTINEL, True)
    signal.signal(signal.SIGTERM, on_sigterm)
