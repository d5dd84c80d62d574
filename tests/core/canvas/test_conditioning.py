"""core/canvas/conditioning.py: per-window call kwargs (crops at every block scale, repeats)."""
import math

import pytest
import torch
import torch.nn.functional as F

from vista.core.checks import VistaInputError
from vista.core.canvas.conditioning import feature_scale, window_call_kwargs
from vista.core.canvas.windows import crop_windows, plan_windows, scale_window


def pyramid(x, levels):
    """A UNet-like feature pyramid: level k is x box-downscaled by 2^k."""
    return [F.avg_pool2d(x, 2**k) if k else x for k in range(levels)]


def unet_grid(size: int, levels: int) -> int:
    """The UNet's own arithmetic: ``levels`` stride-2 convolutions (kernel 3, padding 1), each ``ceil(n / 2)``."""
    for _ in range(levels):
        size = (size + 2 * 1 - 3) // 2 + 1
    return size


class TestFeatureScale:
    def test_ceil_grids(self):
        assert [feature_scale((64, 64), (h, h)) for h in (64, 32, 16, 8)] == [1, 2, 4, 8]
        assert feature_scale((65, 64), (33, 32)) == 2

    @pytest.mark.parametrize("height", [65, 66, 67, 73, 74, 81, 82, 89, 97])
    def test_heights_that_rounding_got_wrong(self, height):
        """Issue [R] 2.1: round(H / h_s) gave 7 here; the deepest SD block is at scale 8."""
        assert feature_scale((height, 64), (math.ceil(height / 8), 8)) == 8

    def test_exhaustive_against_unet_conv_arithmetic(self):
        """Every canvas 64..160 latent px (height x width) x every block scale of a 4-level UNet: the scale is
        recovered from the residual's size, and the cropped residual of a 64-latent-px window has exactly the
        size the UNet produces for that window at the block."""
        windows = plan_windows(64, 64, 64, 64, 8, 8)
        for H in range(64, 161):
            for W in range(64, 161):
                for level in range(4):
                    grid = (unet_grid(H, level), unet_grid(W, level))
                    s = feature_scale((H, W), grid)
                    assert s == 2**level, (H, W, level)
                    crop = scale_window(windows[0], s, *grid)
                    assert (crop.h, crop.w) == (unet_grid(64, level),) * 2, (H, W, level)

    def test_exception(self):
        with pytest.raises(VistaInputError, match="power of two"):
            feature_scale((64, 64), (7, 8))


class TestWindowCallKwargs:
    def test_control_residuals_cropped_per_block(self):
        """Residuals of the canvas, cropped at their block scale, equal the residuals of each
        window's own crop, when offsets are multiples of the deepest scale (plan align=8)."""
        canvas = torch.randn(2, 3, 32, 96)
        windows = plan_windows(32, 96, 32, 32, 8, 8, align=8)
        control = {"input": pyramid(canvas, 4), "middle": [F.avg_pool2d(canvas, 8)], "output": [None]}
        out = window_call_kwargs({"control": control}, (32, 96), windows)
        per_window = crop_windows(canvas, windows)
        for got, want in zip(out["control"]["input"], pyramid(per_window, 4)):
            torch.testing.assert_close(got, want)
        torch.testing.assert_close(out["control"]["middle"][0], F.avg_pool2d(per_window, 8))
        assert out["control"]["output"] == [None]

    @pytest.mark.parametrize("width, wrap", [(35, False), (34, True)])
    def test_residuals_off_the_block_grid_refused(self, width, wrap):
        """Issue [H] 3: a window off a residual's block grid (the last window at size - window = 19 latent px; with
        wrap, a width that is no multiple of 4) used to get its residual crop at a rounded position, silently."""
        canvas = torch.randn(1, 3, 16, 36)[..., :width]
        windows = plan_windows(16, width, 16, 16, 8, 8, wrap_x=wrap, align=4)
        residuals = [F.avg_pool2d(canvas, 2 ** k, ceil_mode=True) if k else canvas for k in range(3)]
        with pytest.raises(VistaInputError, match=r"off the 1/[24] grid \(width\): ControlNet residual crops"):
            window_call_kwargs({"control": {"input": residuals}}, (16, width), windows)
        assert window_call_kwargs({"control": {"input": residuals[:1]}}, (16, width), windows)["control"]["input"][0].shape \
            == (len(windows), 3, 16, 16)  # full resolution: every offset is on the 1/1 grid

    def test_wrapped_residual_crop(self):
        canvas = torch.randn(1, 2, 16, 64)
        windows = plan_windows(16, 64, 16, 32, 16, 16, wrap_x=True)
        out = window_call_kwargs({"control": {"input": pyramid(canvas, 3)}}, (16, 64), windows)
        for got, want in zip(out["control"]["input"], pyramid(crop_windows(canvas, windows), 3)):
            torch.testing.assert_close(got, want)

    def test_concat_cropped_and_per_sample_repeated(self):
        c_concat = torch.randn(2, 5, 16, 40)
        crossattn = torch.randn(2, 77, 8)
        options = {"cond_or_uncond": [0, 1]}
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        out = window_call_kwargs({"c_concat": c_concat, "c_crossattn": crossattn, "transformer_options": options},
                                 (16, 40), windows)
        n = len(windows)
        assert torch.equal(out["c_concat"], crop_windows(c_concat, windows))
        assert out["c_crossattn"].shape == (2 * n, 77, 8)
        # window-major (n·B + b), like ComfyUI's own conditioning repeat: sample b's prompt at every b-th entry
        assert all(torch.equal(out["c_crossattn"][i], crossattn[i % 2]) for i in range(2 * n))
        assert out["transformer_options"] is options

    def test_groups_keep_each_conditioning_contiguous(self):
        """Issue [H] 15: ``groups`` = the conditionings ComfyUI batched into the call. Every per-sample tensor, crop,
        residual and SDXL ``y`` follows crop_windows' grouped order, so row r of every tensor belongs to the same
        (conditioning, window, sample); a tensor of one row shared by the call is repeated as before."""
        from vista.core.canvas.micro_conditioning import window_size_conditioning

        groups, samples = 2, 2
        canvas = torch.randn(groups * samples, 3, 16, 40)
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        n = len(windows)
        y = torch.randn(groups * samples, 1280 + 6 * 256)
        c = {"c_concat": canvas, "c_crossattn": torch.randn(groups * samples, 77, 8), "y": y, "shared": torch.ones(1, 3),
             "control": {"input": pyramid(canvas, 3)}}
        out = window_call_kwargs(c, (16, 40), windows, size_factor=8, groups=groups)
        assert torch.equal(out["c_concat"], crop_windows(canvas, windows, groups=groups))
        for got, want in zip(out["control"]["input"], pyramid(crop_windows(canvas, windows, groups=groups), 3)):
            torch.testing.assert_close(got, want)
        for row in range(groups * n * samples):  # row g·n·B + i·B + b is conditioning g's sample b in window i
            g, b = row // (n * samples), row % samples
            assert torch.equal(out["c_crossattn"][row], c["c_crossattn"][g * samples + b])
            assert torch.equal(out["y"][row, :1280], y[g * samples + b, :1280])
        per_window = window_size_conditioning(y[:samples].repeat(n, 1), windows, 8)  # chunk 0, window-major
        torch.testing.assert_close(out["y"][: n * samples, 1280:], per_window[:, 1280:])
        assert out["shared"].shape == (n, 3)
