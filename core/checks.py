"""Precondition checks for ``core/`` entry points, in the style of ``KORNIA_CHECK``.

Every public function of ``core/`` checks its inputs first, one line per check, and a
failed check raises :class:`VistaInputError` (a ``ValueError``) whose message names the
parameter, the received value, the rule and, where useful, the fix. The node layer
prefixes the node and the user-facing input name (see ``nodes/_common.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["VistaInputError", "check", "check_shape", "check_range"]


class VistaInputError(ValueError):
    """A ``core/`` precondition failed; the message is written for the user."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`VistaInputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise VistaInputError(message)


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Check ``low <= value <= high``.

    >>> check_range("alpha", 0.4, 0.0, 1.0)
    """
    check(low <= value <= high, f"{name} must be in [{low}, {high}], got {value}")


def check_shape(x: torch.Tensor, dims: Sequence[str], name: str = "x") -> None:
    """Check that ``x`` has ``len(dims)`` dimensions; integer entries of ``dims`` must match.

    Named dims (``"B"``, ``"C"``, …) only fix the rank; digits fix a size.

    >>> check_shape(torch.zeros(2, 4, 8, 8), ["B", "C", "H", "W"])
    >>> check_shape(torch.zeros(2, 4, 8, 8), ["B", "4", "H", "W"])
    """
    shape = tuple(x.shape)
    ok = len(shape) == len(dims) and all(not d.isdigit() or int(d) == s for d, s in zip(dims, shape))
    check(ok, f"{name} must have shape ({', '.join(dims)}), got {shape}")
