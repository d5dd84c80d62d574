"""Canvas positions for DiT windows: each window's image tokens told where they lie on the canvas.

A DiT with rotary position embeddings (Flux, Qwen-Image, …) gives every image token the position
``(index, row, column)`` of its patch in the image the model is called on. Under MultiDiffusion each window is
called as a standalone image, so its tokens start at row 0 / column 0 ("window positions"). With
**canvas positions** token ``(r, c)`` of a window at latent offset ``(y, x)`` instead carries the position the
same patch would have if the whole canvas were one image: row ``r + y/p``, column ``c + x/p`` (``p`` the
model's patch size in latent px) plus the family's origin (Qwen-Image centres its grid; Flux does not).

RoPE is relative: inside one window, image↔image attention sees the same relative positions under any uniform
shift, so canvas positions change only image↔text offsets and how windows relate to each other — which is what
merged attention across windows (MAD on DiTs) and canvas-wide references need: a canvas token must carry the same
rotation in every window that holds it. The shift is continuous (``y/p`` need not be an integer: RoPE takes real
positions), and with a wrapped canvas a window past the right edge keeps counting columns (``x/p + c`` > canvas
width): a cylinder has no single consistent planar coordinate.

Rows of a window batch follow :func:`~core.canvas.windows.crop_windows` (index ``g·n·B + i·B + b``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import repeat

from ..checks import check, check_shape
from .windows import Window

__all__ = ["GridOrigin", "window_shifts", "shift_image_ids", "text_shift"]


@dataclass(frozen=True)
class GridOrigin:
    """Where a family's position grid starts, as a function of the image's token grid ``(h, w)``.

    ``centred``: positions run ``-(n // 2) … n - 1 - n // 2`` on each axis (Qwen-Image), else ``0 … n - 1`` (Flux).
    ``text_after_image``: the text tokens start at ``max(h // 2, w // 2)`` (Qwen-Image), else they sit at 0 (Flux).
    """

    centred: bool = False
    text_after_image: bool = False

    def origin(self, n: int) -> float:
        """First position on an axis of ``n`` tokens.

        >>> GridOrigin().origin(7), GridOrigin(centred=True).origin(7)
        (0.0, -3.0)
        """
        return -float(n // 2) if self.centred else 0.0

    def text_start(self, grid_hw: Sequence[int]) -> float:
        """Position of the first text token for an image of ``grid_hw`` tokens (0 when text does not follow)."""
        return float(max(grid_hw[0] // 2, grid_hw[1] // 2)) if self.text_after_image else 0.0


def window_shifts(windows: Sequence[Window], patch: int, canvas_tokens_hw: Sequence[int], window_tokens_hw: Sequence[int],
                  grid: GridOrigin = GridOrigin(), groups: int = 1, batch: int = 1) -> torch.Tensor:
    """Per-row ``(row, column)`` shift from window positions to canvas positions, in tokens.

    A window at latent ``(y, x)`` moves by ``(y/p, x/p)`` plus the difference of the two grids' origins.

    Args:
        windows: the ``n`` windows of one model call (latent px).
        patch: the model's patch size ``p`` in latent px.
        canvas_tokens_hw / window_tokens_hw: token grids of the canvas and of one window.
        grid: the family's origin convention.
        groups, batch: conditionings batched in the call and samples per conditioning.

    Returns:
        ``(G·n·B, 2)`` float32, rows in :func:`~core.canvas.windows.crop_windows`' order.

    >>> window_shifts([Window(0, 0, 8, 8), Window(0, 4, 8, 8)], 2, (4, 6), (4, 4)).tolist()
    [[0.0, 0.0], [0.0, 2.0]]
    >>> window_shifts([Window(0, 4, 8, 8)], 2, (4, 6), (4, 4), GridOrigin(centred=True), groups=2).tolist()
    [[0.0, 1.0], [0.0, 1.0]]
    """
    check(len(windows) > 0, "windows must not be empty")
    check(patch >= 1, f"patch must be >= 1, got {patch}")
    check(groups >= 1 and batch >= 1, f"groups and batch must be >= 1, got {groups}, {batch}")
    base = [grid.origin(c) - grid.origin(w) for c, w in zip(canvas_tokens_hw, window_tokens_hw)]
    per_window = torch.tensor([[win.y / patch + base[0], win.x / patch + base[1]] for win in windows], dtype=torch.float32)
    return repeat(per_window, "n k -> (g n b) k", g=groups, b=batch)


def shift_image_ids(img_ids: torch.Tensor, shifts: torch.Tensor, image_tokens: int, axes: tuple[int, int] = (1, 2)) -> torch.Tensor:
    """``img_ids`` with the first ``image_tokens`` tokens of each row moved by that row's shift.

    Tokens after ``image_tokens`` (reference latents appended by the host: Flux Kontext, Qwen-Image-Edit) keep their
    own positions. The result is float32: half-precision ids lose integers above 256.

    Shape: ``img_ids (R, L, K)``, ``shifts (R, 2)`` → ``(R, L, K)``; ``axes`` are the row and column id axes.

    >>> ids = torch.zeros(1, 3, 3)
    >>> shift_image_ids(ids, torch.tensor([[1.0, 2.0]]), 2)[0].tolist()
    [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.0, 0.0]]
    """
    check_shape(img_ids, ["R", "L", "K"], "img_ids")
    check_shape(shifts, [str(img_ids.shape[0]), "2"], "shifts")
    check(0 < image_tokens <= img_ids.shape[1], f"image_tokens must be in [1, {img_ids.shape[1]}], got {image_tokens}")
    out = img_ids.to(torch.float32).clone()
    for k, axis in enumerate(axes):
        out[:, :image_tokens, axis] += shifts[:, k : k + 1].to(out.device)
    return out


def text_shift(grid: GridOrigin, canvas_tokens_hw: Sequence[int], window_tokens_hw: Sequence[int]) -> float:
    """How far the text tokens move from window to canvas positions (0 where text does not follow the image).

    >>> text_shift(GridOrigin(centred=True, text_after_image=True), (4, 12), (4, 4))
    4.0
    """
    return grid.text_start(canvas_tokens_hw) - grid.text_start(window_tokens_hw)
