"""Merge-Attend-Diffuse (MAD): attention over the merged canvas instead of per window.

MAD (Quattrini et al., mad-merge-attend-diffuse §4 "Merge-Attend-Diffuse Operator",
Fig. 2) replaces an attention layer of the denoiser while the windows ("views") of a
MultiDiffusion plan are processed: the window features are MERGEd into one canvas tensor
by averaging overlapped regions, the attention layer runs on that canvas (self-attention
over all canvas tokens; cross-attention of the canvas queries with the prompt), and the
result is SPLIT back into windows. It is applied for the first τ fraction of the steps
(§5: τ = 15 of 50 steps for Stable Diffusion).

Token layout (ComfyUI's ``BasicTransformerBlock``): a window batch arrives as tokens
``(K·N·B, h_s·w_s, C)``, row-major over the block's ``h_s x w_s`` grid. Inside each of
the ``K`` chunks (ComfyUI may concatenate the negative and positive batches into one call)
the batch is window-major, index ``n·B + b`` for window ``n`` of canvas sample ``b`` — the
order of :func:`~core.canvas.windows.crop_windows` and of ComfyUI's own conditioning repeat. The
block's scale ``s`` is the UNet's downsampling at that block; a window ``(y, x, h, w)`` in
latent px sits on the canvas block grid ``ceil(H/s) x ceil(W/s)`` at ``(y/s, x/s)``. Its offsets
(and a wrapped canvas width) must be multiples of ``s``: a window off that grid has tokens that
straddle two canvas tokens, and is refused rather than merged at a rounded position
(:func:`~core.canvas.windows.check_on_grid`; the node layer plans MAD runs on the UNet's deepest
grid and refuses canvas sizes whose last window would be off it).

Merge and split go through a :class:`TokenIndex`, built once per (plan, block grid) on the
CPU — where the coverage check runs — and moved to the device once; the :class:`MadLayout`
that travels in ``transformer_options`` caches it for the whole run, so an attention call does
no per-window Python loop, no host→device copy and no device sync.

Memory (issue [F] 2): a merged call needs no more than the host's attention over the same
window tokens, up to canvas-sized buffers (the canvas has at most as many tokens as the
windows). The merge accumulates with ``index_add_`` into one float32 canvas (a low-precision
or multi-sample batch is converted in chunks of at most a canvas' worth of tokens, never as a
whole float32 copy of the window batch); the split is one ``index_select`` straight into the
window-major order; self-attention runs in query chunks whose score matrix
(chunk × canvas tokens) is never larger than the windowed attention's (``N × T × T``), so even
an attention that materialises scores stays within the windowed bound (:func:`query_chunk`).
No ``(N·T) × canvas`` matrix is ever built.

Rule for window batches: the merge needs **every window of the plan in one model call**.
A call that holds only a chunk of the plan has the wrong batch and raises; the node layer
denoises all windows in one batch while MAD is active (:func:`mad_active`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from einops import rearrange

from ..checks import check, check_range, check_shape
from ..sampling.schedules import steps_in_fraction
from ..canvas.windows import Window, check_on_grid, grid_scale, scale_window

__all__ = [
    "Attention",
    "MadLayout",
    "TokenIndex",
    "block_scale",
    "canvas_block_hw",
    "window_token_index",
    "token_index",
    "merge_tokens",
    "split_tokens",
    "merged_self_attention",
    "merged_cross_attention",
    "query_chunk",
    "mad_steps",
    "mad_step_index",
    "mad_active",
    "MAD_LAYOUT_KEY",
    "MAD_TAU_KEY",
    "mad_attention_patch",
]

MAD_LAYOUT_KEY = "vista_mad"
"""transformer_options key under which the node layer puts the call's :class:`MadLayout`."""
MAD_TAU_KEY = "vista_mad_tau"
"""transformer_options key holding τ of an active MAD patch (the window code then batches all windows)."""

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``attention(q (B, Tq, heads·d), k (B, Tk, heads·d), v (B, Tk, heads·d)) -> (B, Tq, heads·d)``,
e.g. ``functools.partial(optimized_attention, heads=n_heads)`` in ComfyUI."""


@dataclass(frozen=True)
class TokenIndex:
    """MAD's merge/split at one block grid, as gathers (see :func:`token_index`).

    Attributes:
        index: ``(N·T,)`` long, the canvas token (``y·W_s + x``) of token ``t`` of window ``n``
            at position ``n·T + t`` (row-major window tokens).
        count: ``(H_s·W_s, 1)`` float32, the number of windows covering each canvas token (>= 1).
        n_windows: ``N``.
        n_tokens: ``T = h_s·w_s`` tokens per window.
        grid: the canvas block grid ``(H_s, W_s)``.
    """

    index: torch.Tensor
    count: torch.Tensor
    n_windows: int
    n_tokens: int
    grid: tuple[int, int]


@dataclass(frozen=True)
class MadLayout:
    """Where the windows of a model call lie on the canvas (the node puts it in transformer_options).

    Attributes:
        windows: the window plan (latent px); a model call must hold all of them.
        canvas_hw: canvas ``(H, W)`` in latent px.
        wrap_x: horizontal wrap (360° panorama): windows may run past the right edge.
        batch: canvas samples ``B`` per chunk of the call (a chunk is ``N·B`` window-major crops).

    The layout caches one :class:`TokenIndex` per (block grid, device) for the run; copies made
    with :func:`dataclasses.replace` share that cache.

    >>> MadLayout((Window(0, 0, 8, 8), Window(0, 4, 8, 8)), (8, 12)).n_windows
    2
    """

    windows: tuple[Window, ...]
    canvas_hw: tuple[int, int]
    wrap_x: bool = False
    batch: int = 1
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        _check_plan(self.windows, self.canvas_hw)
        H, W = self.canvas_hw
        check(
            self.wrap_x or all(win.x + win.w <= W for win in self.windows),
            f"windows must end inside the canvas width {W} latent px unless wrap_x is set, "
            f"got a window ending at {max(win.x + win.w for win in self.windows)}",
        )
        check(self.batch >= 1, f"batch must be >= 1 canvas sample, got {self.batch}")

    @property
    def n_windows(self) -> int:
        """Windows per sample in one model call (``N``)."""
        return len(self.windows)

    def token_index(self, block_hw: Sequence[int], device=None) -> TokenIndex:
        """The :class:`TokenIndex` of this plan at a block grid, built once per (grid, device)."""
        key = (tuple(block_hw), str(torch.device(device) if device is not None else "cpu"))
        if key not in self.cache:
            self.cache[key] = token_index(self.windows, self.canvas_hw, tuple(block_hw), device)
        return self.cache[key]


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

    UNet grids are made by stride-2 convolutions (:func:`~core.canvas.windows.grid_scale`).

    >>> block_scale((64, 64), (8, 8)), block_scale((60, 20), (8, 3)), block_scale((12, 12), (3, 3))
    (8, 8, 4)
    """
    return grid_scale(tuple(window_hw), tuple(block_hw))


def canvas_block_hw(canvas_hw: Sequence[int], scale: int) -> tuple[int, int]:
    """Canvas token grid at a block of downsampling ``scale``: ``(ceil(H/s), ceil(W/s))``.

    >>> canvas_block_hw((64, 200), 8)
    (8, 25)
    """
    check(scale >= 1, f"scale must be >= 1, got {scale}")
    return math.ceil(canvas_hw[0] / scale), math.ceil(canvas_hw[1] / scale)


def window_token_index(
    windows: Sequence[Window], canvas_hw: Sequence[int], block_hw: Sequence[int]
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Canvas token index of every window token at one block (on the CPU).

    Args:
        windows: the plan (latent px), all the same size.
        canvas_hw: canvas ``(H, W)`` in latent px.
        block_hw: the windows' token grid ``(h_s, w_s)`` at this block.

    Shape: returns ``index (N, h_s·w_s)`` (row-major window tokens → row-major canvas tokens
    ``y·W_s + x``) and the canvas grid ``(H_s, W_s)``.

    Raises if a window is off this block's grid (:func:`~core.canvas.windows.off_grid_axes`): its
    tokens would be merged one rounded position away from where they lie.

    >>> window_token_index([Window(0, 2, 2, 2)], (2, 4), (1, 1))[0]
    tensor([[1]])
    """
    _check_plan(windows, canvas_hw)
    scale = block_scale((windows[0].h, windows[0].w), block_hw)
    check_on_grid(windows, tuple(canvas_hw), scale, "MAD's merged tokens")
    Hs, Ws = canvas_block_hw(canvas_hw, scale)
    rows = []
    for win in windows:
        sw = scale_window(win, scale, Hs, Ws)
        ys = torch.arange(sw.y, sw.y + sw.h)
        xs = torch.arange(sw.x, sw.x + sw.w) % Ws
        rows.append((ys[:, None] * Ws + xs[None, :]).flatten())
    return torch.stack(rows), (Hs, Ws)


def token_index(
    windows: Sequence[Window], canvas_hw: Sequence[int], block_hw: Sequence[int], device=None
) -> TokenIndex:
    """Build MAD's merge/split gather index at one block grid: on the CPU, checked, moved once.

    Raises if a window is off the block's grid (:func:`window_token_index`) or a canvas token is
    covered by no window (e.g. a call that holds only part of the plan).

    >>> token_index([Window(0, 0, 1, 2), Window(0, 1, 1, 2)], (1, 3), (1, 2)).count.flatten().tolist()
    [1.0, 2.0, 1.0]
    """
    index, (Hs, Ws) = window_token_index(windows, canvas_hw, block_hw)
    count = torch.bincount(index.flatten(), minlength=Hs * Ws)
    missing = (count == 0).nonzero().flatten()
    check(
        missing.numel() == 0,
        f"canvas token (row, col) {tuple(divmod(int(missing[0]), Ws)) if missing.numel() else ()} of the {Hs}x{Ws} "
        f"block grid is covered by no window: keep window sizes, strides and the canvas multiples of the block scale",
    )
    return TokenIndex(index.flatten().to(device), count.to(torch.float32)[:, None].to(device), index.shape[0],
                      index.shape[1], (Hs, Ws))


def _check_tokens(tokens: torch.Tensor, idx: TokenIndex, batch: int, name: str) -> None:
    """Check a window token batch ``(K·N·B, T, C)`` against the index (shapes only: no device sync)."""
    check_shape(tokens, ["K·N·B", "T", "C"], name)
    group = idx.n_windows * batch
    check(
        tokens.shape[0] > 0 and tokens.shape[0] % group == 0,
        f"{name} batch {tokens.shape[0]} must be a positive multiple of {idx.n_windows} windows x {batch} samples: MAD "
        f"needs every window of the plan in one model call (window batch size >= {idx.n_windows})",
    )
    check(tokens.shape[1] == idx.n_tokens, f"{name} must have {idx.n_tokens} tokens per window (block grid), got {tokens.shape[1]}")


def merge_tokens(tokens: torch.Tensor, idx: TokenIndex, batch: int = 1) -> torch.Tensor:
    """MERGE: average the windows' tokens into canvas tokens (MAD §4, uniform over overlaps).

    Args:
        tokens: window tokens, ``K`` chunks of window-major ``N·B`` crops, row-major grid.
        idx: the plan's :class:`TokenIndex` at this block (:func:`token_index`).
        batch: canvas samples ``B`` per chunk.

    Shape: ``tokens (K·N·B, h_s·w_s, C)`` → ``(K·B, H_s·W_s, C)``, in ``tokens``' dtype
    (summed in at least float32).

    Memory: one float32 canvas accumulator; a batch that is not already ``(K, N·T, C)`` float32
    (``B > 1`` or a 16-bit dtype) is converted in chunks of at most ``H_s·W_s`` tokens
    (``ceil(N·T / (H_s·W_s))`` chunks: the mean number of windows over a canvas token).

    >>> idx = token_index([Window(0, 0, 1, 2), Window(0, 1, 1, 2)], (1, 3), (1, 2))
    >>> merge_tokens(torch.tensor([[[1.0], [3.0]], [[5.0], [7.0]]]), idx).flatten()
    tensor([1., 4., 7.])
    """
    _check_tokens(tokens, idx, batch, "tokens")
    n, t, c = idx.n_windows, idx.n_tokens, tokens.shape[-1]
    k, n_canvas = tokens.shape[0] // (n * batch), idx.grid[0] * idx.grid[1]
    acc = torch.promote_types(tokens.dtype, torch.float32)
    windows = tokens.reshape(k, n, batch, t, c)
    canvas = tokens.new_zeros((k * batch, n_canvas, c), dtype=acc)
    if batch == 1 and tokens.dtype == acc:  # already (k, n·t, c) in the accumulator's dtype: no copy at all
        canvas.index_add_(1, idx.index, windows.reshape(k, n * t, c))
    else:
        _add_in_chunks(canvas, windows, idx.index, max(1, n_canvas // t))
    canvas.div_(idx.count.to(acc))
    return canvas.to(tokens.dtype)


def _add_in_chunks(canvas: torch.Tensor, windows: torch.Tensor, index: torch.Tensor, step: int) -> None:
    """``canvas (K·B, T_c, C) += windows (K, N, B, T, C)`` at ``index``, ``step`` windows at a time.

    Each chunk is converted to the canvas' dtype and reordered sample-major in one copy of at most
    ``step·T <= T_c`` tokens per (chunk, sample), the only temporary.
    """
    k, n, batch, t, c = windows.shape
    for start in range(0, n, step):
        part = windows[:, start:start + step]
        chunk = torch.empty((k, batch, part.shape[1], t, c), dtype=canvas.dtype, device=canvas.device)
        chunk.copy_(rearrange(part, "k n b t c -> k b n t c"))
        canvas.index_add_(1, index[start * t:(start + part.shape[1]) * t], chunk.view(k * batch, -1, c))
        del chunk  # before the next one is allocated


def split_tokens(canvas_tokens: torch.Tensor, idx: TokenIndex, batch: int = 1) -> torch.Tensor:
    """SPLIT: crop canvas tokens back into window tokens (MAD §4), window-major.

    Args:
        canvas_tokens: row-major canvas tokens at this block, ``K·B`` of them.
        idx: the plan's :class:`TokenIndex` at this block.
        batch: canvas samples ``B`` per chunk.

    Shape: ``(K·B, H_s·W_s, C)`` → ``(K·N·B, h_s·w_s, C)`` with index ``k·N·B + n·B + b``,
    gathered in that order by one ``index_select`` (no reordering copy).

    >>> idx = token_index([Window(0, 0, 1, 2), Window(0, 2, 1, 2)], (1, 3), (1, 2))
    >>> split_tokens(torch.tensor([[[1.0], [2.0], [3.0]]]), idx).flatten()
    tensor([1., 2., 3., 1.])
    """
    check_shape(canvas_tokens, ["K·B", "T", "C"], "canvas_tokens")
    Hs, Ws = idx.grid
    check(canvas_tokens.shape[1] == Hs * Ws, f"canvas_tokens must have {Hs}x{Ws}={Hs * Ws} tokens, got {canvas_tokens.shape[1]}")
    check(canvas_tokens.shape[0] % batch == 0, f"canvas_tokens batch {canvas_tokens.shape[0]} must be a multiple of batch={batch}")
    groups, n_canvas, c = canvas_tokens.shape
    n, t = idx.n_windows, idx.n_tokens
    index = idx.index
    if groups > 1:  # flat row of (chunk k, window n, sample b, token t): (k·B + b)·H_s·W_s + index[n, t]
        offsets = torch.arange(groups, device=index.device).view(groups // batch, 1, batch, 1) * n_canvas
        index = (offsets + index.view(1, n, 1, t)).flatten()
    return canvas_tokens.reshape(groups * n_canvas, c).index_select(0, index).view(-1, t, c)


def query_chunk(idx: TokenIndex) -> int:
    """Queries per merged self-attention call: the score matrix stays within the windowed attention's.

    The host's attention over the window batch would score ``N x T x T`` pairs per head
    (each window with itself); merged attention over ``T_c = H_s·W_s`` canvas tokens scores
    ``T_c x T_c``, which is larger once ``T_c > sqrt(N)·T`` (many windows). Queries are taken
    ``chunk = floor(N·T² / T_c)`` at a time (``>= T``, as ``T_c <= N·T``), so ``chunk x T_c <= N·T²``:
    an attention that materialises its scores (the host's math fallback) needs no more than it
    would for the windows; a memory-efficient kernel (SDPA flash/efficient) only runs ``ceil(T_c / chunk)``
    calls instead of one.

    >>> windows = [Window(y, x, 4, 4) for y in (0, 2, 4) for x in (0, 2, 4)]  # 9 windows of 16 tokens
    >>> query_chunk(token_index(windows, (8, 8), (4, 4)))  # 64 canvas tokens: 9·16² // 64
    36
    """
    n_canvas = idx.grid[0] * idx.grid[1]
    return max(idx.n_tokens, idx.n_windows * idx.n_tokens ** 2 // n_canvas)


def _attend_in_chunks(attention: Attention, q, k, v, chunk: int, poll: Callable[[], None] | None) -> torch.Tensor:
    """``attention(q, k, v)`` over query chunks of ``chunk`` tokens (rows are independent), ``poll()`` between chunks."""
    n_queries = q.shape[1]
    if chunk >= n_queries:
        return attention(q, k, v)
    out = None
    for start in range(0, n_queries, chunk):
        if poll is not None and start:
            poll()
        part = attention(q[:, start:start + chunk], k, v)
        if out is None:
            out = part.new_empty((q.shape[0], n_queries, part.shape[-1]))
        out[:, start:start + chunk] = part
    return out


def merged_self_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: TokenIndex, batch: int, attention: Attention,
    poll: Callable[[], None] | None = None,
) -> torch.Tensor:
    """MAD on a self-attention layer (attn1): merge q, k, v, attend over the whole canvas, split.

    Merging the projected q, k, v equals projecting the merged features (the projections are
    linear and the merge weights sum to 1), i.e. MAD §4's "self-attention performed on the
    merged tensor". The canvas queries attend in chunks of :func:`query_chunk` tokens.

    Args:
        q, k, v: projected window tokens (see :func:`merge_tokens`); ``k``/``v`` the same windows' tokens.
        idx: the plan's :class:`TokenIndex` at this block.
        batch: canvas samples ``B`` per chunk.
        attention: see :data:`Attention` (heads are the callable's business).
        poll: called between query chunks (the node passes ComfyUI's interrupt check); ``None``: nothing.

    Shape: ``q, k, v (K·N·B, h_s·w_s, heads·d)`` → ``(K·N·B, h_s·w_s, heads·d_v)``.
    """
    check(k.shape[:2] == q.shape[:2] and v.shape[:2] == q.shape[:2],
          f"self-attention k {tuple(k.shape)} and v {tuple(v.shape)} must have q's batch and tokens {tuple(q.shape[:2])}")
    merged = [merge_tokens(t, idx, batch) for t in (q, k, v)]
    out = _attend_in_chunks(attention, *merged, query_chunk(idx), poll)
    del merged  # the canvas q, k, v are not needed for the split
    return split_tokens(out, idx, batch)


def merged_cross_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: TokenIndex, batch: int, attention: Attention,
    poll: Callable[[], None] | None = None,
) -> torch.Tensor:
    """MAD on a cross-attention layer (attn2): merge the queries, attend to the prompt, split.

    Every window of a canvas sample carries that sample's prompt (Vista's window code and
    ComfyUI's conditioning repeat both tile the prompts window-major), so the prompt tokens of
    window 0 of each sample are used; nothing is compared on the device. The scores
    (canvas tokens x prompt tokens) are fewer than the windows' (window tokens x prompt tokens).

    Args:
        q: projected window queries (see :func:`merge_tokens`).
        k, v: projected prompt tokens, one copy per window.
        idx: the plan's :class:`TokenIndex` at this block.
        batch: canvas samples ``B`` per chunk.
        attention: see :data:`Attention`.
        poll: unused (one attention call); accepted so both merged attentions take the same arguments.

    Shape: ``q (K·N·B, h_s·w_s, heads·d)``, ``k, v (K·N·B, L, heads·d)`` → ``(K·N·B, h_s·w_s, heads·d_v)``.
    """
    check_shape(k, ["K·N·B", "L", "C"], "k")
    check_shape(v, ["K·N·B", "L", "C"], "v")
    check(k.shape[0] == q.shape[0] == v.shape[0], f"q, k, v batches must match, got {q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
    k0, v0 = (t.reshape(-1, idx.n_windows, batch, *t.shape[1:])[:, 0].reshape(-1, *t.shape[1:]) for t in (k, v))
    out = attention(merge_tokens(q, idx, batch), k0, v0)
    return split_tokens(out, idx, batch)


def mad_steps(tau: float, n_steps: int) -> int:
    """Number of steps with MAD: round-half-up(τ·n), counted exactly on τ's decimal value.

    MAD §5 applies the operator for the first τ of the steps (15 of 50 for Stable Diffusion,
    τ = 0.3); see :func:`~core.sampling.schedules.steps_in_fraction` (0.14 · 50 is exactly 7, 0.29 · 50 = 14.5 → 15).

    >>> mad_steps(0.3, 50), mad_steps(0.14, 50), mad_steps(0.29, 50), mad_steps(0.01, 49)
    (15, 7, 15, 0)
    """
    check_range("tau", tau, 0.0, 1.0)
    return steps_in_fraction(tau, n_steps)


def mad_step_index(sigma: float, sample_sigmas: Sequence[float] | torch.Tensor) -> int:
    """Sampling step that a model call at ``sigma`` belongs to, counted through ``sample_sigmas``.

    Step ``i`` runs from ``sample_sigmas[i]`` down to ``sample_sigmas[i+1]``; a call at
    ``sample_sigmas[i]`` (or a sub-step between the two, e.g. dpm_2) is step ``i``. The
    index is ``#{sample_sigmas >= sigma} - 1`` (relative tolerance 1e-4, as ComfyUI's
    context windows match sigmas), clamped to ``[0, len(sample_sigmas) - 2]``.

    Args:
        sigma: the call's noise level (the caller turns a device tensor into a float once per call).
        sample_sigmas: the schedule, decreasing, with the final sigma (usually 0); read on the CPU.

    >>> mad_step_index(14.6, [14.6, 7.0, 3.0, 0.0]), mad_step_index(5.0, [14.6, 7.0, 3.0, 0.0])
    (0, 1)
    """
    schedule = torch.as_tensor(sample_sigmas).detach().flatten().cpu().to(torch.float64)
    check(schedule.numel() >= 2, f"sample_sigmas must hold at least 2 sigmas (1 step), got {schedule.numel()}")
    at_or_above = int((schedule >= float(sigma) * (1 - 1e-4)).sum())
    return min(max(at_or_above - 1, 0), schedule.numel() - 2)


def mad_active(step: int, n_steps: int, tau: float) -> bool:
    """Whether MAD applies at 0-based ``step`` of ``n_steps``: the first :func:`mad_steps` steps.

    >>> [mad_active(i, 50, 0.3) for i in (0, 14, 15)]
    [True, True, False]
    """
    return step < mad_steps(tau, n_steps)


def mad_attention_patch(
    cross: bool, optimized_attention: Callable, key: str = MAD_LAYOUT_KEY, poll: Callable[[], None] | None = None
) -> Callable:
    """An attention-replace patch ``fn(q, k, v, extra_options)`` for ComfyUI's attn1/attn2 (MAD §4–5).

    The patch merges whenever the call carries a :class:`MadLayout` in ``extra_options[key]``;
    the window code puts it there exactly on the steps where MAD is active (:func:`mad_active`),
    so the patch reads no sigma. Without a layout it is ComfyUI's own attention
    ``optimized_attention(q, k, v, n_heads, ...)``.

    Args:
        cross: ``True`` for cross-attention (attn2), ``False`` for self-attention (attn1).
        optimized_attention: the host's ``optimized_attention(q, k, v, heads, attn_precision=, transformer_options=)``.
        key: transformer_options key of the layout.
        poll: called before every merged attention call and between its query chunks (the node passes
            ComfyUI's interrupt check, so an interrupt stops a merged UNet call within one layer).

    Shape: ``q (K·N·B, h_s·w_s, heads·d)``; ``extra_options["activations_shape"][-2:] == (h_s, w_s)``.
    """
    merged = merged_cross_attention if cross else merged_self_attention

    def patch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = extra_options["n_heads"]
        kwargs = {"attn_precision": extra_options.get("attn_precision"), "transformer_options": extra_options}

        def attention(q, k, v):
            return optimized_attention(q, k, v, heads, **kwargs)

        layout = extra_options.get(key)
        if layout is None:
            return attention(q, k, v)
        if poll is not None:
            poll()
        idx = layout.token_index(tuple(extra_options["activations_shape"][-2:]), q.device)
        return merged(q, k, v, idx, layout.batch, attention, poll)

    return patch
