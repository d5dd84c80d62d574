"""core/canvas/budget.py: windows, evaluations and memory of a windowed run, estimated before sampling (issue [F] 2)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vista.core.canvas.budget import (
    ATTENTION_WORKING,
    EXPENSIVE_WINDOWS_PER_STEP,
    RES_WORKING,
    TIGHT_FRACTION,
    CanvasBudget,
    UNetGeometry,
    estimate_canvas_budget,
    level_tokens,
    merged_attention_bytes,
    unet_window_elements,
)
from vista.core.checks import VistaInputError
from vista.core.canvas.windows import plan_windows

SD15 = UNetGeometry(320, (1, 2, 4, 4), (2, 2, 2, 2), (True, True, True, False), 8)
SLIM = UNetGeometry(320, (1, 1), (1, 1), (False, True), 8)  # tools/make_test_checkpoint.py's UNet

# Peak live activation elements per extra window, in units of C·t_0, measured on the host's UNetModel
# (ComfyUI v0.33.0, float32, CPU, torch SDPA; 32x32 latent px windows, one conditioning) with a dispatch-mode
# counter of live tensor storages: the slope between calls of 4 and 8 windows.
MEASURED = [
    (SLIM, 8.117),                                                                   # the test checkpoint
    (UNetGeometry(32, (1, 1, 1, 1), (1, 1, 1, 1), (False, False, True, True), 4), 8.130),  # tests/support deep UNet
    (UNetGeometry(64, (1, 2), (1, 1), (True, True), 4), 25.567),                    # attention at full resolution
    (UNetGeometry(32, (1, 2, 4, 4), (2, 2, 2, 2), (True, True, True, False), 8), 24.130),  # SD1.5's layout, slim
]


class TestUNetGeometry:
    def test_smoke(self):
        assert SD15.levels == 4 and SD15.channels(2) == 1280 and SD15.finest_attention_level == 0
        assert SLIM.finest_attention_level == 1

    def test_no_attention(self):
        assert UNetGeometry(8, (1,), (1,), (False,)).finest_attention_level is None

    @pytest.mark.parametrize("args, match", [
        ((0, (1,), (1,), (False,)), "model_channels"),
        ((8, (), (), ()), "channel_mult"),
        ((8, (1, 0), (1, 1), (False, False)), "channel_mult"),
        ((8, (1, 2), (1,), (False, False)), "one entry per level"),
        ((8, (1, 2), (1, 1), (False,)), "one entry per level"),
        ((8, (1,), (-1,), (False,)), "num_res_blocks"),
        ((8, (1,), (1,), (False,), 0), "heads"),
    ])
    def test_exception(self, args, match):
        with pytest.raises(VistaInputError, match=match):
            UNetGeometry(*args)


class TestLevelTokens:
    @pytest.mark.parametrize("hw, level, tokens", [((64, 64), 0, 4096), ((64, 64), 3, 64), ((60, 20), 3, 24),
                                                   ((1, 1), 5, 1), ((9, 17), 1, 45)])
    def test_ceil_per_stride_two_level(self, hw, level, tokens):
        assert level_tokens(hw, level) == tokens


class TestUnetWindowElements:
    def test_sd15_by_hand(self):
        """SD1.5 at a 64x64 latent window: skips + the full-resolution transformer's working set."""
        t = [4096, 1024, 256, 64]
        c = [320, 640, 1280, 1280]
        skips = 320 * t[0] + sum(2 * c[l] * t[l] for l in range(4)) + sum(c[l] * t[l + 1] for l in range(3))
        assert unet_window_elements(SD15, (64, 64)) == skips + ATTENTION_WORKING * 320 * 4096

    def test_slim_by_hand(self):
        """Without attention at level 0, the largest working set is level 0's res block (6 x 320 x 1024)."""
        assert unet_window_elements(SLIM, (32, 32)) == 320 * 1024 * (1 + 1 + RES_WORKING) + 320 * 256 * 2

    @pytest.mark.parametrize("geometry, measured", MEASURED)
    def test_within_calibration(self, geometry, measured):
        """The estimate is within -5 %…+15 % of the measured per-window peak on four host UNets."""
        units = unet_window_elements(geometry, (32, 32)) / (geometry.model_channels * 32 * 32)
        assert 0.95 * measured <= units <= 1.15 * measured, (units, measured)

    @settings(max_examples=40, deadline=None)
    @given(st.integers(1, 16), st.integers(1, 16))
    def test_quadruples_when_both_sides_double(self, h8, w8):
        """Aligned windows (multiples of 2^(levels-1)): every term is tokens x channels, so doubling both sides x4."""
        assert unet_window_elements(SD15, (16 * h8, 16 * w8)) == 4 * unet_window_elements(SD15, (8 * h8, 8 * w8))

    @settings(max_examples=40, deadline=None)
    @given(st.integers(1, 96), st.integers(1, 96))
    def test_monotone_in_the_window(self, h, w):
        assert unet_window_elements(SD15, (h, w)) <= unet_window_elements(SD15, (h + 1, w))

    def test_at_least_conv_in_and_one_res_block(self):
        """The lower bound the 16384² report hit: conv_in's output alone is C·t_0 per window."""
        assert unet_window_elements(SLIM, (64, 64)) >= (1 + RES_WORKING) * 320 * 4096

    @pytest.mark.parametrize("hw", [(0, 8), (8,), (8, -1)])
    def test_exception(self, hw):
        with pytest.raises(VistaInputError, match="window_hw"):
            unet_window_elements(SLIM, hw)


class TestMergedAttentionBytes:
    def test_formula_at_the_finest_attention_level(self):
        """SLIM attends at level 1: a 256x256 latent canvas has 128x128 tokens of 320 channels."""
        tokens = 128 * 128
        assert merged_attention_bytes(SLIM, (256, 256), 2, 2) == 2 * tokens * (320 * (4 * 2 + 4) + 8 * 4)

    def test_level_zero_for_sd15(self):
        assert merged_attention_bytes(SD15, (64, 320), 1, 4) == 64 * 320 * (320 * 20 + 32)

    def test_no_attention_no_bytes(self):
        assert merged_attention_bytes(UNetGeometry(8, (1,), (1,), (False,)), (64, 64), 2, 4) == 0

    @settings(max_examples=30, deadline=None)
    @given(st.integers(1, 4), st.integers(1, 64), st.integers(1, 64))
    def test_linear_in_groups(self, groups, h, w):
        one = merged_attention_bytes(SD15, (h, w), 1, 2)
        assert merged_attention_bytes(SD15, (h, w), groups, 2) == groups * one

    def test_below_the_window_batch(self):
        """Canvas-sized buffers: a 4x-overlap plan's merged attention is a small part of its window batch."""
        windows = plan_windows(256, 256, 64, 64, 16, 16)
        window_batch = len(windows) * unet_window_elements(SD15, (64, 64)) * 2
        assert merged_attention_bytes(SD15, (256, 256), 1, 2) < window_batch / 20

    @pytest.mark.parametrize("groups, itemsize", [(0, 2), (1, 0)])
    def test_exception(self, groups, itemsize):
        with pytest.raises(VistaInputError, match="groups and itemsize"):
            merged_attention_bytes(SD15, (64, 64), groups, itemsize)


class TestEstimateCanvasBudget:
    def test_smoke(self):
        b = estimate_canvas_budget(window_bytes=100, windows_per_step=21, windows_per_call=4, samples=2)
        assert isinstance(b, CanvasBudget)
        assert (b.windows_per_step, b.evaluations_per_step, b.windows_per_call, b.total_bytes) == (21, 84, 8, 800)

    def test_call_capped_at_the_plan(self):
        """window_batch_size larger than the plan: the call holds the plan."""
        assert estimate_canvas_budget(window_bytes=1, windows_per_step=3, windows_per_call=256).windows_per_call == 3

    def test_mad_call_holds_every_window(self):
        b = estimate_canvas_budget(window_bytes=7, windows_per_step=169, windows_per_call=169, conditionings=2,
                                   merged_bytes=5)
        assert b.windows_per_call == 338 and b.total_bytes == 338 * 7 + 5

    def test_huge_canvas_numbers(self):
        """Issue [F] 2: 16384² px, 512 px windows at stride 128 px on the slim SD1.5 checkpoint (float32)."""
        windows = plan_windows(2048, 2048, 64, 64, 16, 16)
        assert len(windows) == 15_625
        b = estimate_canvas_budget(window_bytes=unet_window_elements(SLIM, (64, 64)) * 4, windows_per_step=len(windows),
                                   windows_per_call=len(windows), merged_bytes=merged_attention_bytes(SLIM, (2048, 2048), 1, 4))
        assert b.evaluations_per_step == 31_250 and b.expensive
        assert b.activation_bytes >= 81_920_000_000  # the conv_in output the host failed to allocate: 15,625 x 320 x 64² x 4 B
        assert b.exceeds(128 * 2 ** 30)  # more than any single machine lent here

    def test_expensive_threshold(self):
        at = estimate_canvas_budget(window_bytes=1, windows_per_step=EXPENSIVE_WINDOWS_PER_STEP, windows_per_call=1)
        above = estimate_canvas_budget(window_bytes=1, windows_per_step=EXPENSIVE_WINDOWS_PER_STEP + 1, windows_per_call=1)
        assert not at.expensive and above.expensive

    @settings(max_examples=60, deadline=None)
    @given(st.integers(0, 10_000), st.integers(1, 10_000))
    def test_exceeds_and_tight_partition(self, total, free):
        """exceeds: total > free; tight: TIGHT_FRACTION·free < total <= free; they never hold together."""
        b = CanvasBudget(1, 2, 1, total)
        assert b.exceeds(free) == (total > free)
        assert b.tight(free) == (TIGHT_FRACTION * free < total <= free)
        assert not (b.exceeds(free) and b.tight(free))

    @pytest.mark.parametrize("kwargs, match", [
        ({"windows_per_step": 0}, "must be >= 1"), ({"windows_per_call": 0}, "must be >= 1"), ({"samples": 0}, "must be >= 1"),
        ({"conditionings": 0}, "must be >= 1"), ({"window_bytes": -1}, "bytes must be >= 0"), ({"merged_bytes": -1}, "bytes"),
    ])
    def test_exception(self, kwargs, match):
        args = {"window_bytes": 1, "windows_per_step": 2, "windows_per_call": 2, **kwargs}
        with pytest.raises(VistaInputError, match=match):
            estimate_canvas_budget(**args)

