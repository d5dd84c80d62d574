"""Cost and memory of a windowed run, estimated before sampling allocates (issue [F] 2): integer arithmetic.

A MultiDiffusion plan of ``N`` windows of ``h x w`` latent px costs, per sampling step and canvas
sample, ``N`` window evaluations for every conditioning the sampler evaluates (2 with CFG: the
negative and the positive prompt). Memory is dominated by the activations of the window batch of
one model call: ``window_batch_size`` windows per call with plain MultiDiffusion, but **every window
of the plan** in one call while MAD is active (the merge needs them all), which is what made a
16384² px canvas ask for 15,625 windows' activations at once. MAD's merged attention adds
canvas-sized buffers at the finest attention level (:func:`merged_attention_bytes`).

The activation estimate of a UNet (:func:`unet_window_elements`) counts, per window,

* the skip connections the UNet keeps for its output blocks: ``conv_in`` (``C·t_0``), every input
  res block of level ``l`` (``C·m_l·t_l`` each) and every downsample output (``C·m_l·t_{l+1}``),
  where ``C`` = model channels, ``m_l`` = channel multiplier and ``t_l = ceil(h/2^l)·ceil(w/2^l)``
  tokens at level ``l``;
* plus the largest working set of one block: ``ATTENTION_WORKING · C·m_l·t_l`` at a level with a
  transformer (GEGLU feed-forward 8C + 4C + 4C, residual stream, projections, attention output)
  and ``RES_WORKING · C·m_l·t_l`` elsewhere (concatenated input, norm, activation, convolution).

The two constants were fitted on the host's own UNet (ComfyUI's ``UNetModel``, float32, CPU, torch
SDPA), measuring the peak of live tensors per extra window with a dispatch-mode counter: 7.9, 8.1,
24.1 and 25.6 ``C·t_0`` units for four geometries (tests/core/canvas/test_budget.py lists them with the
estimate, which is within -4 %…+12 % of each). Memory-efficient attention (SDPA flash/efficient,
sub-quadratic or split attention) is assumed: the host picks one of those on every device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..checks import check

__all__ = [
    "GIB",
    "RES_WORKING",
    "ATTENTION_WORKING",
    "EXPENSIVE_WINDOWS_PER_STEP",
    "TIGHT_FRACTION",
    "UNetGeometry",
    "level_tokens",
    "unet_window_elements",
    "merged_attention_bytes",
    "CanvasBudget",
    "estimate_canvas_budget",
]

GIB = 2 ** 30
RES_WORKING = 6
"""Working set of a res block (its concatenated input, norm, activation, convolution), in its ``channels x tokens``."""
ATTENTION_WORKING = 22
"""Working set of a transformer block (GEGLU 8C + 4C + 4C, residuals, q/k/v, attention output), in its
``channels x tokens``."""
EXPENSIVE_WINDOWS_PER_STEP = 256
"""Above this many windows per step (per canvas sample) a run is called expensive and the user is warned."""
TIGHT_FRACTION = 0.75
"""An estimate above this fraction of the free memory is close to the limit: the user is warned."""


@dataclass(frozen=True)
class UNetGeometry:
    """A UNet's levels as plain ints: what the activation estimate needs (the node layer reads them from the host).

    Attributes:
        model_channels: ``C``, channels of level 0 (320 on SD1.x/SDXL).
        channel_mult: ``m_l`` per level (SD1.5 ``(1, 2, 4, 4)``, SDXL ``(1, 2, 4)``).
        num_res_blocks: input res blocks per level (2 on SD1.5 and SDXL).
        attention: per level, whether its blocks hold a transformer (SD1.5 ``(True, True, True, False)``).
        heads: attention heads at the finest attention level.

    >>> UNetGeometry(320, (1, 2, 4, 4), (2, 2, 2, 2), (True, True, True, False), 8).levels
    4
    """

    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    attention: tuple[bool, ...]
    heads: int = 8

    def __post_init__(self):
        check(self.model_channels >= 1, f"model_channels must be >= 1, got {self.model_channels}")
        check(len(self.channel_mult) >= 1 and min(self.channel_mult) >= 1,
              f"channel_mult must be one or more multipliers >= 1, got {self.channel_mult}")
        check(len(self.num_res_blocks) == len(self.channel_mult) == len(self.attention),
              f"num_res_blocks {self.num_res_blocks} and attention {self.attention} must have one entry per level of "
              f"channel_mult {self.channel_mult}")
        check(min(self.num_res_blocks) >= 0, f"num_res_blocks must be >= 0, got {self.num_res_blocks}")
        check(self.heads >= 1, f"heads must be >= 1, got {self.heads}")

    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    def channels(self, level: int) -> int:
        """Channels of a level: ``C·m_l``."""
        return self.model_channels * self.channel_mult[level]

    @property
    def finest_attention_level(self) -> int | None:
        """The level of the largest token grid that has attention (None: no attention at all)."""
        return next((level for level, on in enumerate(self.attention) if on), None)


def level_tokens(hw, level: int) -> int:
    """Tokens of an ``h x w`` latent grid at UNet level ``l`` (stride-2 downsampling): ``ceil(h/2^l)·ceil(w/2^l)``.

    >>> level_tokens((64, 64), 0), level_tokens((64, 64), 1), level_tokens((60, 20), 3)
    (4096, 1024, 24)
    """
    s = 2 ** level
    return math.ceil(hw[0] / s) * math.ceil(hw[1] / s)


def unet_window_elements(geometry: UNetGeometry, window_hw) -> int:
    """Peak live activation elements that one window adds to a UNet call (see the module docstring).

    ``skips + max_l(working_l)``: skips = ``C·t_0 + Σ_l n_l·C·m_l·t_l + Σ_{l<L-1} C·m_l·t_{l+1}``,
    working_l = ``(ATTENTION_WORKING if level l attends else RES_WORKING)·C·m_l·t_l``.
    Multiply by the batch (windows x samples x conditionings in the call) and the element size.

    Args:
        geometry: the UNet's levels.
        window_hw: window ``(h, w)`` in latent px.

    >>> slim = UNetGeometry(320, (1, 1), (1, 1), (False, True))  # the test checkpoint: 8.5 C·t_0 units
    >>> unet_window_elements(slim, (32, 32)) / (320 * 32 * 32)
    8.5
    """
    check(len(window_hw) == 2 and min(window_hw) >= 1, f"window_hw must be (h, w) >= 1 latent px, got {tuple(window_hw)}")
    g = geometry
    skips = g.model_channels * level_tokens(window_hw, 0)
    skips += sum(g.num_res_blocks[l] * g.channels(l) * level_tokens(window_hw, l) for l in range(g.levels))
    skips += sum(g.channels(l) * level_tokens(window_hw, l + 1) for l in range(g.levels - 1))
    working = max((ATTENTION_WORKING if g.attention[l] else RES_WORKING) * g.channels(l) * level_tokens(window_hw, l)
                  for l in range(g.levels))
    return skips + working


def merged_attention_bytes(geometry: UNetGeometry, canvas_hw, groups: int, itemsize: int) -> int:
    """Extra bytes of MAD's merged attention at the finest attention level, beyond the window batch's own.

    ``groups·T_c·c·(4·itemsize + 4) + groups·heads·T_c·4`` with ``T_c`` canvas tokens and ``c``
    channels at that level: the merged q, k, v and the canvas output in the model's dtype, one
    float32 merge accumulator, and SDPA's float32 log-sum-exp per head and query. The split output
    and the query chunks' scores are no larger than the windowed attention's (counted in the
    window batch, see :func:`~core.mad.attention_merge.query_chunk`).

    Args:
        geometry: the UNet's levels.
        canvas_hw: canvas ``(H, W)`` in latent px.
        groups: canvas samples x conditionings in the call (``K·B``).
        itemsize: bytes per element of the model's compute dtype.

    >>> slim = UNetGeometry(320, (1, 1), (1, 1), (False, True), 8)
    >>> merged_attention_bytes(slim, (256, 256), 2, 4)  # 2·128²·(320·20 + 32)
    210763776
    """
    level = geometry.finest_attention_level
    if level is None:
        return 0
    check(groups >= 1 and itemsize >= 1, f"groups and itemsize must be >= 1, got {groups}, {itemsize}")
    tokens = level_tokens(canvas_hw, level)
    return groups * tokens * (geometry.channels(level) * (4 * itemsize + 4) + geometry.heads * 4)


@dataclass(frozen=True)
class CanvasBudget:
    """What a windowed run costs per step, and the memory of its largest model call.

    Attributes:
        windows_per_step: windows of the plan (per canvas sample).
        evaluations_per_step: window evaluations per step: windows x samples x conditionings.
        windows_per_call: windows in the largest model call (samples and conditionings included).
        activation_bytes: activations of that call's window batch.
        merged_attention_bytes: MAD's canvas-sized buffers (0 without MAD).
    """

    windows_per_step: int
    evaluations_per_step: int
    windows_per_call: int
    activation_bytes: int
    merged_attention_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.merged_attention_bytes

    @property
    def expensive(self) -> bool:
        """More than :data:`EXPENSIVE_WINDOWS_PER_STEP` windows per step."""
        return self.windows_per_step > EXPENSIVE_WINDOWS_PER_STEP

    def exceeds(self, free_bytes: int) -> bool:
        """The largest call cannot fit in ``free_bytes``."""
        return self.total_bytes > free_bytes

    def tight(self, free_bytes: int) -> bool:
        """The largest call fits but takes more than :data:`TIGHT_FRACTION` of ``free_bytes``."""
        return TIGHT_FRACTION * free_bytes < self.total_bytes <= free_bytes


def estimate_canvas_budget(
    *, window_bytes: int, windows_per_step: int, windows_per_call: int, samples: int = 1, conditionings: int = 1,
    evaluated_conditionings: int = 2, merged_bytes: int = 0,
) -> CanvasBudget:
    """The :class:`CanvasBudget` of a plan.

    Args:
        window_bytes: activation bytes one window adds to a call (:func:`unet_window_elements` x itemsize,
            or the host's own estimate for other networks).
        windows_per_step: windows of the plan.
        windows_per_call: plan windows per model call (``window_batch_size``, or all of them under MAD).
        samples: canvas samples ``B`` (the latent batch).
        conditionings: conditionings batched in one call (1 is the least ComfyUI runs: it splits the
            positive and negative batches when they do not fit together).
        evaluated_conditionings: conditionings evaluated per step (2 with CFG).
        merged_bytes: :func:`merged_attention_bytes` while MAD is active, else 0.

    >>> b = estimate_canvas_budget(window_bytes=10, windows_per_step=300, windows_per_call=300, merged_bytes=5)
    >>> b.total_bytes, b.evaluations_per_step, b.expensive, b.exceeds(3004), b.tight(3006)
    (3005, 600, True, True, True)
    """
    check(min(windows_per_step, windows_per_call, samples, conditionings, evaluated_conditionings) >= 1,
          "windows_per_step, windows_per_call, samples and conditionings must be >= 1, got "
          f"{windows_per_step}, {windows_per_call}, {samples}, {conditionings}, {evaluated_conditionings}")
    check(window_bytes >= 0 and merged_bytes >= 0, f"bytes must be >= 0, got {window_bytes}, {merged_bytes}")
    per_call = min(windows_per_call, windows_per_step) * samples * conditionings
    return CanvasBudget(windows_per_step, windows_per_step * samples * evaluated_conditionings, per_call,
                        per_call * window_bytes, merged_bytes)
