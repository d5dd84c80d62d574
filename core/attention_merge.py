"""Merge-Attend-Diffuse (MAD): attention over the merged canvas instead of per window.

MAD (Quattrini et al., mad-merge-attend-diffuse §4 "Merge-Attend-Diffuse Operator",
Fig. 2) replaces an attention layer of the denoiser while the windows ("views") of a
MultiDiffusion plan are processed: the window features are MERGEd into one canvas tensor
by averaging overlapped regions, the attention layer runs on that canvas (self-attention
over all canvas tokens; cross-attention of the canvas queries with the prompt), and the
result is SPLIT back into windows. It is applied for the first τ fraction of the steps
(§5: τ = 15 of 50 steps for Stable Diffusion).

Token layout (ComfyUI's ``BasicTransformerBlock``): a window batch arrives as tokens
``(B·N, h_s·w_s, C)``, row-major over the block's ``h_s x w_s`` grid, sample-major over
windows (batch index ``b·N + n``). The block's scale ``s`` is the UNet's downsampling at
that block; a window ``(y, x, h, w)`` in latent px sits on the canvas block grid
``ceil(H/s) x ceil(W/s)`` at :func:`~core.windows.scale_window`'s position.

Rule for window batches: the merge needs **every window of the plan in one model call**
(all ``N`` windows for each of the ``B`` samples). A call that holds only a chunk of the
plan leaves canvas tokens without a window and raises; the node layer must therefore
denoise all windows in one batch while :func:`mad_active` is true.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange

from .checks import check, check_range, check_shape
from .windows import Window, scale_window

__all__ = [
    "Attention",
    "MadLayout",
    "block_scale",
    "canvas_block_hw",
    "window_token_index",
    "merge_tokens",
    "split_tokens",
    "merged_self_attention",
    "merged_cross_attention",
    "mad_step_index",
    "mad_active",
    "MAD_LAYOUT_KEY",
    "mad_attention_patch",
]

MAD_LAYOUT_KEY = "vista_mad"
MAD_TAU_KEY = "vista_mad_tau"  # transformer_options: τ of an active MAD patch (the window wrapper batches all windows then)
"""transformer_options key under which the node layer puts the call's :class:`MadLayout`."""

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``attention(q (B, Tq, heads·d), k (B, Tk, heads·d), v (B, Tk, heads·d)) -> (B, Tq, heads·d)``,
e.g. ``functools.partial(optimized_attention, heads=n_heads)`` in ComfyUI."""


@dataclass(frozen=True)
class MadLayout:
    """Where the windows of one model call lie on the canvas (the node puts it in transformer_options).

    Attributes:
        windows: the window plan (latent px); a model call must hold all of them, sample-major.
        canvas_hw: canvas ``(H, W)`` in latent px.
        wrap_x: horizontal wrap (360° panorama): windows may run past the right edge.

    >>> MadLayout((Window(0, 0, 8, 8), Window(0, 4, 8, 8)), (8, 12)).n_windows
    2
    """

    windows: tuple[Window, ...]
    canvas_hw: tuple[int, int]
    wrap_x: bool = False

    def __post_init__(self):
        _check_plan(self.windows, self.canvas_hw)
        H, W = self.canvas_hw
        check(
            self.wrap_x or all(win.x + win.w <= W for win in self.windows),
            f"windows must end inside the canvas width {W} latent px unless wrap_x is set, "
            f"got a window ending at {max(win.x + win.w for win in self.windows)}",
        )

    @property
    def n_windows(self) -> int:
        """Windows per sample in one model call (``N``; the batch is ``B·N``)."""
        return len(self.windows)


def _check_plan(windows: Sequence[Window], canvas_hw: Sequence[int]) -> None:
    """Check a window plan against its canvas (non-empty, one size, rows inside, width ≤ canvas)."""
    check(len(windows) > 0, "windows must not be empty")
    check(len(canvas_hw) == 2 and min(canvas_hw) >= 1, f"canvas_hw must be (H, W) >= 1 latent px, got {tuple(canvas_hw)}")
    H, W = canvas_hw
    h, w = windows[0].h, windows[0].w
    check(all((win.h, win.w) == (h, w) for win in windows), "all windows of a plan must have the same size")
    check(1 <= h <= H and 1 <= w <= W, f"window size ({h}, {w}) must be in [1, canvas ({H}, {W})] latent px")
    check(
        all(0 <= win.y <= H - h and 0 <= win.x < W for win in windows),
        f"window offsets must satisfy 0 <= y <= {H - h} and 0 <= x < {W} latent px",
    )


def block_scale(window_hw: Sequence[int], block_hw: Sequence[int]) -> int:
    """Downsampling factor of a UNet block: the smallest power of two ``s`` with ``ceil(window/s) == block``.

    UNet grids are made by stride-2 convolutions, so a block at level ``l`` has
    ``ceil(h / 2**l)`` rows; this inverts that (unique while ``h > s/2``).

    Args:
        window_hw: window size ``(h, w)`` in latent px (``original_shape[-2:]`` in ComfyUI).
        block_hw: the block's token grid ``(h_s, w_s)`` (``activations_shape[-2:]``).

    >>> block_scale((64, 64), (8, 8)), block_scale((60, 20), (8, 3)), block_scale((12, 12), (3, 3))
    (8, 8, 4)
    """
    (h, w), (bh, bw) = window_hw, block_hw
    check(min(h, w, bh, bw) >= 1, f"window_hw {tuple(window_hw)} and block_hw {tuple(block_hw)} must be >= 1")
    s = 1
    while s < 2 * max(h, w):
        if (math.ceil(h / s), math.ceil(w / s)) == (bh, bw):
            return s
        s *= 2
    check(False, f"block_hw {tuple(block_hw)} is not window_hw {tuple(window_hw)} downsampled by a power of two (ceil)")
    return s


def canvas_block_hw(canvas_hw: Sequence[int], scale: int) -> tuple[int, int]:
    """Canvas token grid at a block of downsampling ``scale``: ``(ceil(H/s), ceil(W/s))``.

    >>> canvas_block_hw((64, 200), 8)
    (8, 25)
    """
    check(scale >= 1, f"scale must be >= 1, got {scale}")
    return math.ceil(canvas_hw[0] / scale), math.ceil(canvas_hw[1] / scale)


def window_token_index(
    windows: Sequence[Window], canvas_hw: Sequence[int], block_hw: Sequence[int], device=None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Canvas token index of every window token at one block (MAD's SPLIT as a gather index).

    Args:
        windows: the plan (latent px), all the same size.
        canvas_hw: canvas ``(H, W)`` in latent px.
        block_hw: the windows' token grid ``(h_s, w_s)`` at this block.
        device: device of the index.

    Shape: returns ``index (N, h_s·w_s)`` (row-major window tokens → row-major canvas tokens
    ``y·W_s + x``) and the canvas grid ``(H_s, W_s)``.

    >>> window_token_index([Window(0, 2, 2, 2)], (2, 4), (1, 1))[0]
    tensor([[1]])
    """
    _check_plan(windows, canvas_hw)
    scale = block_scale((windows[0].h, windows[0].w), block_hw)
    Hs, Ws = canvas_block_hw(canvas_hw, scale)
    rows = []
    for win in windows:
        sw = scale_window(win, scale, Hs, Ws)
        ys = torch.arange(sw.y, sw.y + sw.h, device=device)
        xs = torch.arange(sw.x, sw.x + sw.w, device=device) % Ws
        rows.append((ys[:, None] * Ws + xs[None, :]).flatten())
    return torch.stack(rows), (Hs, Ws)


def _check_tokens(tokens: torch.Tensor, n_windows: int, n_tokens: int, name: str) -> None:
    """Check a sample-major window token batch ``(B·N, T, C)``."""
    check_shape(tokens, ["B·N", "T", "C"], name)
    check(
        tokens.shape[0] % n_windows == 0 and tokens.shape[0] > 0,
        f"{name} batch {tokens.shape[0]} must be a positive multiple of the {n_windows} windows: MAD needs "
        f"every window of the plan in one model call (window batch size >= {n_windows})",
    )
    check(tokens.shape[1] == n_tokens, f"{name} must have {n_tokens} tokens per window (block grid), got {tokens.shape[1]}")


def merge_tokens(
    tokens: torch.Tensor, windows: Sequence[Window], canvas_hw: Sequence[int], block_hw: Sequence[int]
) -> torch.Tensor:
    """MERGE: average the windows' tokens into canvas tokens (MAD §4, uniform over overlaps).

    Args:
        tokens: window tokens, sample-major (batch index ``b·N + n``), row-major grid.
        windows: the ``N`` windows of the plan (latent px); a wrapped window continues at column 0.
        canvas_hw: canvas ``(H, W)`` in latent px.
        block_hw: the windows' token grid ``(h_s, w_s)`` at this block.

    Shape: ``tokens (B·N, h_s·w_s, C)`` → ``(B, H_s·W_s, C)``.

    Raises if a canvas token is covered by no window (a chunk of the plan, or offsets that
    round apart at this block: keep sizes and strides multiples of the deepest scale).

    >>> merge_tokens(torch.tensor([[[1.0], [3.0]], [[5.0], [7.0]]]), [Window(0, 0, 1, 2), Window(0, 1, 1, 2)], (1, 3), (1, 2)).flatten()
    tensor([1., 4., 7.])
    """
    index, (Hs, Ws) = window_token_index(windows, canvas_hw, block_hw)  # on the CPU: no device sync
    _check_tokens(tokens, len(windows), index.shape[1], "tokens")
    count = torch.bincount(index.flatten(), minlength=Hs * Ws)
    missing = (count == 0).nonzero().flatten()
    check(
        missing.numel() == 0,
        f"canvas token (row, col) {tuple(divmod(int(missing[0]), Ws)) if missing.numel() else ()} of the {Hs}x{Ws} "
        f"block grid is covered by no window: pass every window of the plan in one call and keep window sizes, "
        f"strides and the canvas multiples of the block scale",
    )
    acc = torch.promote_types(tokens.dtype, torch.float32)
    grouped = rearrange(tokens, "(b n) t c -> b (n t) c", n=len(windows)).to(acc)
    canvas = grouped.new_zeros(grouped.shape[0], Hs * Ws, grouped.shape[-1])
    canvas.index_add_(1, index.flatten().to(tokens.device), grouped)
    return (canvas / count[:, None].to(canvas)).to(tokens.dtype)


def split_tokens(
    canvas_tokens: torch.Tensor, windows: Sequence[Window], canvas_hw: Sequence[int], block_hw: Sequence[int]
) -> torch.Tensor:
    """SPLIT: crop canvas tokens back into window tokens (MAD §4), sample-major.

    Args:
        canvas_tokens: row-major canvas tokens at this block.
        windows, canvas_hw, block_hw: as in :func:`merge_tokens`.

    Shape: ``(B, H_s·W_s, C)`` → ``(B·N, h_s·w_s, C)`` with batch index ``b·N + n``.

    >>> split_tokens(torch.tensor([[[1.0], [2.0], [3.0]]]), [Window(0, 0, 1, 2), Window(0, 2, 1, 2)], (1, 3), (1, 2)).flatten()
    tensor([1., 2., 3., 1.])
    """
    index, (Hs, Ws) = window_token_index(windows, canvas_hw, block_hw, canvas_tokens.device)
    check_shape(canvas_tokens, ["B", "T", "C"], "canvas_tokens")
    check(canvas_tokens.shape[1] == Hs * Ws, f"canvas_tokens must have {Hs}x{Ws}={Hs * Ws} tokens, got {canvas_tokens.shape[1]}")
    out = canvas_tokens[:, index.flatten()]
    return rearrange(out, "b (n t) c -> (b n) t c", n=len(windows))


def merged_self_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    windows: Sequence[Window],
    canvas_hw: Sequence[int],
    block_hw: Sequence[int],
    attention: Attention,
) -> torch.Tensor:
    """MAD on a self-attention layer (attn1): merge q, k, v, attend over the whole canvas, split.

    Merging the projected q, k, v equals projecting the merged features (the projections are
    linear and the merge weights sum to 1), i.e. MAD §4's "self-attention performed on the
    merged tensor".

    Args:
        q, k, v: projected window tokens, sample-major; ``k``/``v`` must be the same windows' tokens.
        windows, canvas_hw, block_hw: as in :func:`merge_tokens`.
        attention: see :data:`Attention` (heads are the callable's business).

    Shape: ``q, k, v (B·N, h_s·w_s, heads·d)`` → ``(B·N, h_s·w_s, heads·d_v)``.
    """
    check(k.shape[:2] == q.shape[:2] and v.shape[:2] == q.shape[:2],
          f"self-attention k {tuple(k.shape)} and v {tuple(v.shape)} must have q's batch and tokens {tuple(q.shape[:2])}")
    merged = [merge_tokens(t, windows, canvas_hw, block_hw) for t in (q, k, v)]
    return split_tokens(attention(*merged), windows, canvas_hw, block_hw)


def merged_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    windows: Sequence[Window],
    canvas_hw: Sequence[int],
    block_hw: Sequence[int],
    attention: Attention,
) -> torch.Tensor:
    """MAD on a cross-attention layer (attn2): merge the queries, attend to the prompt, split.

    The prompt tokens of one sample are the same for all its windows, so each sample's
    window-0 copy of ``k``/``v`` is used (checked: windows with different prompts raise).

    Args:
        q: projected window queries, sample-major.
        k, v: projected prompt tokens, one copy per window.
        windows, canvas_hw, block_hw: as in :func:`merge_tokens`.
        attention: see :data:`Attention`.

    Shape: ``q (B·N, h_s·w_s, heads·d)``, ``k, v (B·N, L, heads·d)`` → ``(B·N, h_s·w_s, heads·d_v)``.
    """
    n = len(windows)
    check_shape(k, ["B·N", "L", "C"], "k")
    check_shape(v, ["B·N", "L", "C"], "v")
    check(k.shape[0] == q.shape[0] == v.shape[0], f"q, k, v batches must match, got {q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
    merged_q = merge_tokens(q, windows, canvas_hw, block_hw)
    k_g, v_g = (rearrange(t, "(b n) l c -> b n l c", n=n) for t in (k, v))
    check(
        torch.equal(k_g, k_g[:, :1].expand_as(k_g)) and torch.equal(v_g, v_g[:, :1].expand_as(v_g)),
        "merged cross-attention needs the same prompt (k, v) for every window of a sample; "
        "per-window prompts cannot be merged",
    )
    return split_tokens(attention(merged_q, k_g[:, 0], v_g[:, 0]), windows, canvas_hw, block_hw)


def mad_step_index(sigma: float | torch.Tensor, sample_sigmas: Sequence[float] | torch.Tensor) -> int:
    """Sampling step that a model call at ``sigma`` belongs to, counted through ``sample_sigmas``.

    Step ``i`` runs from ``sample_sigmas[i]`` down to ``sample_sigmas[i+1]``; a call at
    ``sample_sigmas[i]`` (or a sub-step between the two, e.g. dpm_2) is step ``i``. The
    index is ``#{sample_sigmas >= sigma} - 1`` (relative tolerance 1e-4, as ComfyUI's
    context windows match sigmas), clamped to ``[0, len(sample_sigmas) - 2]``.

    Args:
        sigma: the call's noise level (a float, or ComfyUI's ``sigmas`` tensor: its max is used).
        sample_sigmas: the schedule, decreasing, with the final sigma (usually 0).

    >>> mad_step_index(14.6, [14.6, 7.0, 3.0, 0.0]), mad_step_index(5.0, [14.6, 7.0, 3.0, 0.0])
    (0, 1)
    """
    schedule = torch.as_tensor(sample_sigmas, dtype=torch.float64).flatten().cpu()
    check(schedule.numel() >= 2, f"sample_sigmas must hold at least 2 sigmas (1 step), got {schedule.numel()}")
    s = float(torch.as_tensor(sigma, dtype=torch.float64).max())
    at_or_above = int((schedule >= s * (1 - 1e-4)).sum())
    return min(max(at_or_above - 1, 0), schedule.numel() - 2)


def mad_active(sigma: float | torch.Tensor, sample_sigmas: Sequence[float] | torch.Tensor, tau: float) -> bool:
    """Whether MAD applies at this call: the step index is within the first ``tau`` fraction of the steps.

    MAD §5 applies the operator for the first τ steps (15 of 50 for Stable Diffusion, i.e.
    ``tau = 0.3``); ``tau = 0`` never applies it, ``tau = 1`` always.

    Args:
        sigma, sample_sigmas: as in :func:`mad_step_index`.
        tau: fraction of the steps, in ``[0, 1]``.

    >>> sigmas = torch.linspace(10, 0, 51)
    >>> [mad_active(sigmas[i], sigmas, 0.3) for i in (0, 14, 15)]
    [True, True, False]
    """
    check_range("tau", tau, 0.0, 1.0)
    n_steps = torch.as_tensor(sample_sigmas).numel() - 1
    return mad_step_index(sigma, sample_sigmas) < tau * n_steps


def mad_attention_patch(cross: bool, tau: float, optimized_attention: Callable, key: str = MAD_LAYOUT_KEY) -> Callable:
    """An attention-replace patch ``fn(q, k, v, extra_options)`` for ComfyUI's attn1/attn2 (MAD §4–5).

    The patch reads the call's :class:`MadLayout` from ``extra_options[key]`` and applies the
    merged attention while :func:`mad_active` (``extra_options["sigmas"]``, ``["sample_sigmas"]``);
    otherwise — no layout (the model runs without Vista's window wrapper), no schedule, or past
    τ — it is exactly ComfyUI's own attention ``optimized_attention(q, k, v, n_heads, ...)``.

    Args:
        cross: ``True`` for cross-attention (attn2), ``False`` for self-attention (attn1).
        tau: fraction of the steps with MAD, in ``[0, 1]`` (paper: 0.3 = 15 of 50).
        optimized_attention: the host's ``optimized_attention(q, k, v, heads, attn_precision=, transformer_options=)``.
        key: transformer_options key of the layout.

    Shape: ``q (B·N, h_s·w_s, heads·d)``; ``extra_options["activations_shape"][-2:] == (h_s, w_s)``.
    """
    check_range("tau", tau, 0.0, 1.0)
    merged = merged_cross_attention if cross else merged_self_attention

    def patch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = extra_options["n_heads"]
        kwargs = {"attn_precision": extra_options.get("attn_precision"), "transformer_options": extra_options}

        def attention(q, k, v):
            return optimized_attention(q, k, v, heads, **kwargs)

        layout, sigmas, schedule = (extra_options.get(name) for name in (key, "sigmas", "sample_sigmas"))
        if layout is None or sigmas is None or schedule is None or not mad_active(sigmas, schedule, tau):
            return attention(q, k, v)
        block_hw = tuple(extra_options["activations_shape"][-2:])
        return merged(q, k, v, layout.windows, layout.canvas_hw, block_hw, attention)

    return patch
