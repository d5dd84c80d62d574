"""core/canvas/windows.py: window plans cover every pixel; weights; crop/fuse identities; wrap."""
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vista.core.checks import VistaInputError
from vista.core.canvas.windows import (
    Window,
    accumulate_windows,
    axis_offsets,
    check_on_grid,
    crop_windows,
    fuse_windows,
    grid_canvas_sizes,
    off_grid_axes,
    plan_windows,
    repeat_for_windows,
    scale_window,
    total_weight,
    weight_map,
    window_weights,
)


def coverage(windows, height, width):
    count = torch.zeros(height, width, dtype=torch.int64)
    for w in windows:
        count[w.y : w.y + w.h, torch.tensor(w.columns(width))] += 1
    return count


@st.composite
def plans(draw):
    window_h = draw(st.integers(1, 24))
    window_w = draw(st.integers(1, 24))
    height = draw(st.integers(window_h, 80))
    width = draw(st.integers(window_w, 80))
    stride_h = draw(st.integers(1, window_h))
    stride_w = draw(st.integers(1, window_w))
    return height, width, window_h, window_w, stride_h, stride_w, draw(st.booleans()), draw(st.sampled_from([1, 2, 4]))


def plannable(size: int, window: int, stride: int, align: int) -> bool:
    """Whether axis_offsets accepts these (a stride rounded to the align grid must fit the window)."""
    return max(align, stride // align * align) <= window <= size


class TestAxisOffsets:
    def test_smoke(self):
        assert axis_offsets(64, 64, 8) == [0]
        assert axis_offsets(256, 64, 16)[-1] == 192

    def test_stride_not_dividing_covers_far_edge(self):
        offsets = axis_offsets(100, 64, 16)
        assert offsets == [0, 16, 32, 36]

    def test_wrap_is_circular(self):
        assert axis_offsets(100, 64, 16, wrap=True) == [0, 16, 32, 48, 64, 80, 96]

    def test_align_snaps_offsets(self):
        assert all(o % 8 == 0 for o in axis_offsets(256, 64, 20, align=8))

    @pytest.mark.parametrize(
        "args, match",
        [((10, 12, 4), "larger than the canvas"), ((10, 4, 0), "stride"), ((10, 4, 5), "stride"),
         ((10, 0, 1), "window must be"), ((10, 4, 2, False, 0), "align"), ((16, 4, 3, False, 8), "rounded")],
    )
    def test_exception(self, args, match):
        with pytest.raises(VistaInputError, match=match):
            axis_offsets(*args)


class TestPlanWindows:
    @settings(max_examples=300, deadline=None)
    @given(plans())
    def test_covers_every_pixel(self, plan):
        height, width, wh, ww, sh, sw, wrap, align = plan
        if max(align, sh // align * align) > wh or max(align, sw // align * align) > ww:
            with pytest.raises(VistaInputError):
                plan_windows(height, width, wh, ww, sh, sw, wrap, align)
            return
        windows = plan_windows(height, width, wh, ww, sh, sw, wrap, align)
        assert coverage(windows, height, width).min() >= 1
        assert all(w.y + w.h <= height and (wrap or w.x + w.w <= width) for w in windows)

    def test_window_equals_canvas_is_one_window(self):
        assert plan_windows(64, 64, 64, 64, 8, 8) == (Window(0, 0, 64, 64),)

    def test_panorama_count(self):
        # 512x2048 px on SD1.5 = 64x256 latent, window 64, stride 16 (SyncDiffusion/MAD): 13 windows
        assert len(plan_windows(64, 256, 64, 64, 16, 16)) == 13

    def test_wrap_windows_run_past_edge(self):
        windows = plan_windows(8, 20, 8, 8, 8, 8, wrap_x=True)
        assert windows[-1].wraps(20) and windows[-1].columns(20) == [16, 17, 18, 19, 0, 1, 2, 3]


class TestWeightMap:
    @pytest.mark.parametrize("mode", ["uniform", "gaussian", "guided"])
    def test_positive_max_one(self, mode):
        w = weight_map(17, 32, mode)
        assert w.shape == (17, 32) and w.min() > 0 and w.max() == 1

    def test_guided_is_one_at_centre_and_floor_at_corners(self):
        w = weight_map(65, 65, "guided", dtype=torch.float64)
        assert w[32, 32] == 1 and w[0, 0] == pytest.approx(0.01) and w[32, 0] == pytest.approx(1 - 1 / math.sqrt(2))

    def test_guided_linear_along_diagonal(self):
        w = weight_map(65, 65, "guided", dtype=torch.float64)
        diag = torch.stack([w[i, i] for i in range(32, 65)])
        steps = diag[:-1] - diag[1:]
        assert torch.allclose(steps[:-1], steps[0].expand(len(steps) - 1), atol=1e-9)

    def test_exception(self):
        with pytest.raises(VistaInputError, match="weight mode"):
            weight_map(4, 4, "cone")

    def test_underflow_to_zero_refused(self):
        """Issue [H] 16: gaussian corners (~exp(-25)) underflow to 0 in float16; refused, never returned as 0."""
        with pytest.raises(VistaInputError, match=r"gaussian weights of a 192x192 window underflow to 0 in "
                                                  r"torch.float16 at \d+ of 36864 pixels.*float32"):
            weight_map(192, 192, "gaussian", dtype=torch.float16)

    @pytest.mark.parametrize("mode, dtype", [("uniform", torch.float16), ("guided", torch.float16),
                                             ("gaussian", torch.bfloat16), ("gaussian", torch.float32)])
    def test_low_precision_kept_where_nothing_underflows(self, mode, dtype):
        """float16 holds uniform and guided weights (floor 0.01), bfloat16 the gaussian's 1e-11: the cast of the
        float64 map, every weight positive."""
        w = weight_map(192, 192, mode, dtype=dtype)
        assert w.dtype == dtype and w.min() > 0
        assert torch.equal(w, weight_map(192, 192, mode, dtype=torch.float64).to(dtype))


class TestWindowWeights:
    def test_shape(self):
        assert window_weights(plan_windows(8, 16, 8, 8, 4, 4), "gaussian").shape == (3, 1, 8, 8)

    def test_exception_empty(self):
        with pytest.raises(VistaInputError, match="empty"):
            window_weights(())

    def test_exception_mixed_sizes(self):
        with pytest.raises(VistaInputError, match="same size"):
            window_weights((Window(0, 0, 4, 4), Window(0, 0, 4, 8)))

    def test_exception_float16_gaussian_underflow(self):
        """Issue [H] 16: used to return 2240 zero weights of 36864 (a 192x192 window) without a word."""
        with pytest.raises(VistaInputError, match="underflow to 0 in torch.float16"):
            window_weights(plan_windows(192, 192, 192, 192, 192, 192), "gaussian", dtype=torch.float16)

    @settings(max_examples=200, deadline=None)
    @given(plans(), st.sampled_from(["uniform", "gaussian", "guided"]))
    def test_total_weight_never_zero(self, plan, mode):
        height, width, wh, ww, sh, sw, wrap, _ = plan
        windows = plan_windows(height, width, wh, ww, sh, sw, wrap)
        den = total_weight(windows, window_weights(windows, mode, dtype=torch.float64), height, width)
        assert den.min() > 0


class TestCropWindows:
    def test_window_major_order(self):
        """Batch index n·B + b, the order in which ComfyUI tiles a batch of prompts over a larger batch."""
        x = torch.arange(2 * 1 * 4 * 8, dtype=torch.float32).reshape(2, 1, 4, 8)
        windows = plan_windows(4, 8, 4, 4, 4, 4)
        crops = crop_windows(x, windows)
        assert torch.equal(crops[1], x[1, :, :, :4]) and torch.equal(crops[2], x[0, :, :, 4:])

    def test_wrap_crop(self):
        x = torch.arange(10.0).reshape(1, 1, 1, 10)
        crops = crop_windows(x, (Window(0, 8, 1, 4),))
        assert crops.flatten().tolist() == [8.0, 9.0, 0.0, 1.0]

    def test_scaled_crop(self):
        x = torch.randn(1, 3, 4, 10)  # a block grid at 1/4 of a 16x40 latent
        crops = crop_windows(x, (Window(0, 16, 16, 16),), scale=4)
        assert torch.equal(crops[0], x[0, :, :, 4:8])

    def test_exception_shape(self):
        with pytest.raises(VistaInputError, match="shape"):
            crop_windows(torch.zeros(4, 4), (Window(0, 0, 2, 2),))

    def test_groups_keep_each_chunk_contiguous(self):
        """Issue [H] 15: with ``groups`` (the conditionings of one ComfyUI call, one per entry of cond_or_uncond)
        chunk ``g`` of the canvas batch becomes rows ``g·N·B … (g+1)·N·B`` of the crops, window-major inside,
        as ComfyUI's own batches keep each entry of cond_or_uncond one contiguous chunk of equal size."""
        x = torch.randn(6, 2, 4, 12)  # 3 groups (e.g. uncond, cond, a third prompt) of B = 2 samples
        windows = plan_windows(4, 12, 4, 4, 4, 4)
        crops = crop_windows(x, windows, groups=3)
        for g, chunk in enumerate(crops.chunk(3)):
            assert torch.equal(chunk, crop_windows(x[2 * g : 2 * g + 2], windows))

    def test_exception_groups(self):
        with pytest.raises(VistaInputError, match="groups=2"):
            crop_windows(torch.zeros(3, 1, 4, 4), (Window(0, 0, 2, 2),), groups=2)


class TestScaleWindow:
    def test_clamped_to_grid(self):
        assert scale_window(Window(8, 0, 9, 9), 2, 8, 8) == Window(3, 0, 5, 5)


def token_starts(win: Window, scale: int, width: int) -> set[tuple[int, int]]:
    """Latent px where each of the window's tokens at a 1/scale grid starts (columns modulo the canvas width)."""
    return {(win.y + scale * r, (win.x + scale * c) % width)
            for r in range(math.ceil(win.h / scale)) for c in range(math.ceil(win.w / scale))}


class TestOffGridAxes:
    @pytest.mark.parametrize("width_px, off", [(2048, {1: (), 2: (), 4: ()}), (2064, {1: (), 2: (), 4: ("width",)}),
                                               (2072, {1: (), 2: ("width",), 4: ("width",)})])
    def test_sdxl_canvases(self, width_px, off):
        """SDXL, 1024 px windows at stride 256 px on the 32 px grid (align 4): the last window starts at
        size - window = 128, 130, 131 latent px."""
        windows = plan_windows(128, width_px // 8, 128, 128, 32, 32, align=4)
        assert {s: off_grid_axes(windows, (128, width_px // 8), s) for s in (1, 2, 4)} == off

    @settings(max_examples=300, deadline=None)
    @given(plans(), st.sampled_from([1, 2, 4, 8]))
    def test_on_grid_iff_every_token_starts_a_canvas_token(self, plan, scale):
        """The definition: a window's tokens start at (y + s·r, x + s·c) (mod W); on the grid iff each of those is
        (s·R, s·C) of the canvas grid, and the wrapped column is the same canvas token."""
        height, width, wh, ww, sh, sw, wrap, align = plan
        assume(plannable(height, wh, sh, align) and plannable(width, ww, sw, align))
        windows = plan_windows(height, width, wh, ww, sh, sw, wrap, align)
        for win in windows:
            starts = token_starts(win, scale, width)
            exact = all(y % scale == 0 and x % scale == 0 for y, x in starts)
            exact &= not win.wraps(width) or width % scale == 0  # else column x + s·c − W is a token's, not C·s
            assert (off_grid_axes((win,), (height, width), scale) == ()) == exact, (win, scale)

    def test_exception(self):
        with pytest.raises(VistaInputError, match="scale"):
            off_grid_axes((Window(0, 0, 4, 4),), (4, 4), 0)


class TestCheckOnGrid:
    def test_names_the_window_and_the_grid(self):
        windows = plan_windows(128, 259, 128, 128, 32, 32, align=4)
        with pytest.raises(VistaInputError, match=r"\(y=0, x=131\) latent px of the 128x259 canvas is off the 1/2 "
                                                  r"grid \(width\): residuals would land at a rounded position"):
            check_on_grid(windows, (128, 259), 2, "residuals")

    def test_wrapped_width_off_the_grid(self):
        with pytest.raises(VistaInputError, match=r"x=8\).*1/4 grid \(width\)"):
            check_on_grid((Window(0, 0, 8, 8), Window(0, 8, 8, 8)), (8, 14), 4, "tokens")

    def test_on_grid_passes(self):
        check_on_grid(plan_windows(128, 256, 128, 128, 32, 32, align=4), (128, 256), 4, "tokens")


class TestGridCanvasSizes:
    @pytest.mark.parametrize("args, sizes", [((259, 128, 4), (256, 260)), ((258, 128, 4), (256, 260)),
                                             ((256, 128, 4), (256,)), ((259, 128, 4, True), (256, 260)),
                                             ((3, 3, 4, True), (4,)), ((65, 64, 8), (64, 72))])
    def test_smoke(self, args, sizes):
        assert grid_canvas_sizes(*args) == sizes

    @settings(max_examples=300, deadline=None)
    @given(plans())
    def test_nearest_sizes_plan_on_the_grid(self, plan):
        """Every size offered plans on the grid (what the node's refusal promises), and no size strictly between
        them and the asked size does."""
        _, width, _, ww, _, sw, wrap, align = plan
        assume(plannable(width, ww, sw, align))
        sizes = grid_canvas_sizes(width, ww, align, wrap)

        def on_grid(n):  # a canvas n wide, the window clamped to it as the nodes do; None if it cannot be planned
            w = min(ww, n)
            if not plannable(n, w, min(sw, w), align):
                return None
            return off_grid_axes(plan_windows(align, n, align, w, align, min(sw, w), wrap, align), (align, n), align) == ()

        assert all(on_grid(n) for n in sizes)
        assert not any(on_grid(n) for n in range(min(sizes) + 1, max(sizes)) if n not in sizes)
        assert min(sizes) <= width <= max(sizes) and on_grid(width) == (sizes == (width,))

    @pytest.mark.parametrize("args, match", [((10, 4, 0), "align"), ((10, 12, 4), "window"), ((10, 0, 4), "window")])
    def test_exception(self, args, match):
        with pytest.raises(VistaInputError, match=match):
            grid_canvas_sizes(*args)


class TestRepeatForWindows:
    def test_window_major(self):
        t = torch.tensor([[1.0], [2.0]])
        assert repeat_for_windows(t, 2).flatten().tolist() == [1.0, 2.0, 1.0, 2.0]

    def test_groups_follow_crop_order(self):
        """A per-sample tensor repeated with ``groups`` meets its own rows' crops (same index as crop_windows)."""
        x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 6)  # sample i is the constant i
        windows = plan_windows(2, 6, 2, 2, 2, 2)
        crops = crop_windows(x, windows, groups=2)
        assert torch.equal(repeat_for_windows(torch.arange(4.0), len(windows), groups=2), crops[:, 0, 0, 0])


class TestAccumulateWindows:
    @pytest.mark.parametrize("groups", [1, 2, 4])
    def test_crop_then_fuse_is_identity_in_every_grouping(self, groups):
        x = torch.randn(4, 3, 8, 20, dtype=torch.float64)
        windows = plan_windows(8, 20, 8, 8, 4, 4)
        weights = window_weights(windows, "gaussian", dtype=torch.float64)
        out = torch.zeros_like(x)
        accumulate_windows(out, crop_windows(x, windows, groups=groups), windows, weights, groups)
        torch.testing.assert_close(out / total_weight(windows, weights, 8, 20), x)

    def test_exception_groups(self):
        windows = plan_windows(4, 8, 4, 4, 4, 4)
        with pytest.raises(VistaInputError, match="groups=3"):
            accumulate_windows(torch.zeros(2, 1, 4, 8), torch.zeros(4, 1, 4, 4), windows, window_weights(windows), 3)


class TestFuseWindows:
    @pytest.mark.parametrize("mode", ["uniform", "gaussian", "guided"])
    @pytest.mark.parametrize("wrap", [False, True])
    def test_identical_predictions_return_prediction(self, mode, wrap):
        """Crops of one canvas, fused, give back the canvas (any weights, wrap or not)."""
        x = torch.randn(2, 4, 24, 40, dtype=torch.float64)
        windows = plan_windows(24, 40, 16, 16, 5, 7, wrap_x=wrap)
        weights = window_weights(windows, mode, dtype=torch.float64)
        fused = fuse_windows(crop_windows(x, windows), windows, weights, total_weight(windows, weights, 24, 40))
        torch.testing.assert_close(fused, x)

    def test_sixteen_channel_latents(self):
        x = torch.randn(1, 16, 16, 48)
        windows = plan_windows(16, 48, 16, 16, 8, 8)
        weights = window_weights(windows)
        fused = fuse_windows(crop_windows(x, windows), windows, weights, total_weight(windows, weights, 16, 48))
        torch.testing.assert_close(fused, x)

    def test_exception_batch(self):
        windows = plan_windows(4, 8, 4, 4, 4, 4)
        weights = window_weights(windows)
        with pytest.raises(VistaInputError, match="multiple"):
            fuse_windows(torch.zeros(3, 1, 4, 4), windows, weights, total_weight(windows, weights, 4, 8))
