"""Which sampling steps a method acts on, and with what weight: small integer-exact schedules.

Shared by MAD (merged attention for the first τ of the steps), SyncDiffusion (``f`` guided steps
spread over the run and ending at its last step, weight decayed per step) and MSD (guidance for the first 30 % of the steps,
scaled cosine weight). Step counts are integers: a fraction of the steps is rounded half up on
the fraction's decimal value, so float noise never adds or drops a step.
"""
from __future__ import annotations

import math
from fractions import Fraction

from ..checks import check, check_range

__all__ = ["steps_in_fraction", "uniform_steps", "decayed_weight", "cosine_weight"]


def steps_in_fraction(fraction: float, n_steps: int) -> int:
    """Number of steps in the first ``fraction`` of ``n_steps``: round-half-up(fraction·n), exactly.

    ``fraction`` is read as the decimal the user typed (``repr``), so 0.14 · 50 is exactly 7 (not
    7.000000000000001) and 0.29 · 50 = 14.5 rounds up to 15.

    >>> steps_in_fraction(0.3, 50), steps_in_fraction(0.14, 50), steps_in_fraction(0.29, 50), steps_in_fraction(0.01, 49)
    (15, 7, 15, 0)
    """
    check_range("fraction of the steps", fraction, 0.0, 1.0)
    check(n_steps >= 0, f"n_steps must be >= 0, got {n_steps}")
    return math.floor(Fraction(repr(float(fraction))) * n_steps + Fraction(1, 2))


def uniform_steps(count: int, n_steps: int) -> frozenset[int]:
    """``count`` step indices spread uniformly over ``n_steps``, the last step included (SyncDiffusion supp. §6.6, ``f``).

    Convention (the official SyncDiffusion code, ``(i + 1) % sync_freq == 0`` with the period
    ``sync_freq = n / f``): step ``i`` is guided when ``(i + 1)·count/n_steps`` reaches a whole number, i.e.
    steps ``ceil(k·n/count) − 1`` for ``k = 1 … count``. When ``count`` divides ``n_steps`` these are exactly
    the official code's steps (10 of 50: 4, 9, …, 49); ``count >= n_steps`` is every step, ``count = 0`` none.

    >>> sorted(uniform_steps(10, 50))[:3], len(uniform_steps(50, 50)), sorted(uniform_steps(5, 50))
    ([4, 9, 14], 50, [9, 19, 29, 39, 49])
    """
    check(count >= 0, f"count must be >= 0 steps, got {count}")
    check(n_steps >= 0, f"n_steps must be >= 0, got {n_steps}")
    if count >= n_steps:
        return frozenset(range(n_steps))
    return frozenset(-(-k * n_steps // count) - 1 for k in range(1, count + 1))


def decayed_weight(weight: float, decay: float, step: int) -> float:
    """``weight · decay^step`` (SyncDiffusion §5: initial weight ``w`` decayed at rate 0.95 per step).

    ``step`` counts every sampling step from 0, guided or not (the SyncDiffusion reference code's
    convention), so guiding every 5th step decays as fast in time as guiding every step.

    >>> round(decayed_weight(20.0, 0.95, 10), 4)
    11.9747
    """
    return weight * decay**step


def cosine_weight(weight: float, step: int, n_steps: int) -> float:
    """``weight · (1 + cos(π (T − t) / T)) / 2`` at step ``step`` of ``n_steps`` (MSD §4.1 scaled cosine decay).

    With ``t`` counting down from ``T``, ``(T − t) / T = step / n_steps``: the full weight at the first
    step, half of it mid-run.

    >>> cosine_weight(10.0, 0, 50), cosine_weight(10.0, 25, 50)
    (10.0, 5.0)
    """
    check(n_steps >= 1, f"n_steps must be >= 1, got {n_steps}")
    return weight * (1 + math.cos(math.pi * step / n_steps)) / 2
