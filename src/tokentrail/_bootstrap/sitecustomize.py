"""Loaded by every Python process started under ``tokentrail run`` (its folder is put on PYTHONPATH).

It turns capture on and then runs any other ``sitecustomize`` the environment had, so it stays
invisible to the program. It never raises: a program must run even if tokentrail cannot.
"""

import os
import sys


def _start() -> None:
    if os.environ.get("TOKENTRAIL_AUTO") != "1":
        return
    try:
        import tokentrail
    except ImportError:  # a Python of another environment, started by an instrumented program
        return
    try:
        tokentrail.instrument()
    except Exception as exc:  # never stop the user's program
        print(f"tokentrail: capture is off in this process: {exc!r}", file=sys.stderr)


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    mine = sys.modules.pop("sitecustomize", None)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        import sitecustomize  # noqa: F401  (the environment's own, if any)
    except ImportError:
        pass
    except Exception as exc:
        print(f"tokentrail: the environment's sitecustomize failed: {exc!r}", file=sys.stderr)
    finally:
        sys.path[:] = saved
        if mine is not None:
            sys.modules["sitecustomize"] = mine


_start()
_chain()
