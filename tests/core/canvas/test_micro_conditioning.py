"""core/canvas/micro_conditioning.py: SDXL's Fourier size embedding and the per-window crop/target rewrite.

The host tier (tests/host/test_sdxl_nodes.py) checks the embedding against ComfyUI's own ``SDXL.encode_adm``
bit for bit; here the conventions are pinned without a host.
"""
import math

import pytest
import torch

from vista.core.checks import VistaInputError
from vista.core.canvas.conditioning import window_call_kwargs
from vista.core.canvas.micro_conditioning import (SIZE_EMBED_DIM, fourier_embedding, size_embedding, window_crop_target,
                                           window_size_conditioning)
from vista.core.canvas.windows import Window, plan_windows


def naive_embedding(value: float, dim: int = 256) -> torch.Tensor:
    """The formula written out in float64: cos then sin of value·10000^(-k/(dim/2))."""
    half = dim // 2
    args = [value * math.exp(-math.log(10000.0) * k / half) for k in range(half)]
    return torch.tensor([math.cos(a) for a in args] + [math.sin(a) for a in args], dtype=torch.float64)


def sdxl_y(pooled: torch.Tensor, sizes) -> torch.Tensor:
    """``[pooled | F(h) | F(w) | F(crop_h) | F(crop_w) | F(target_h) | F(target_w)]`` for one row of sizes."""
    return torch.cat([pooled, size_embedding(torch.tensor([sizes], dtype=torch.float32))[0]])


def decode(y_row: torch.Tensor) -> list[int]:
    """The six integers told by one SDXL ``y`` row: each field's slowest sinusoid gives its value
    (``atan2(sin, cos) / f_127``, unambiguous below 2π / f_127 ≈ 58 700 px)."""
    f = math.exp(-math.log(10000.0) * 127 / 128)
    fields = y_row[-6 * SIZE_EMBED_DIM:].double().view(6, SIZE_EMBED_DIM)
    return [round(math.atan2(float(e[255]), float(e[127])) % (2 * math.pi) / f) for e in fields]


class TestFourierEmbedding:
    def test_smoke_zero(self):
        assert fourier_embedding(torch.tensor([0.0]), 6).tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]

    @pytest.mark.parametrize("value", [0.0, 8.0, 512.0, 1024.0, 4096.0])
    def test_matches_the_formula(self, value):
        out = fourier_embedding(torch.tensor([value]))
        assert out.shape == (1, 256) and out.dtype == torch.float32
        # float32 arguments up to 4096 rad: the cos/sin of an argument rounded to float32 (ulp 5e-4 at 4096)
        assert torch.allclose(out[0].double(), naive_embedding(value), atol=1e-3)

    def test_odd_dim_zero_column(self):
        out = fourier_embedding(torch.tensor([3.0, 5.0]), 7)
        assert out.shape == (2, 7) and torch.equal(out[:, -1], torch.zeros(2))

    def test_exception(self):
        with pytest.raises(VistaInputError, match=r"values must have shape \(N,\), got \(1, 1\)"):
            fourier_embedding(torch.zeros(1, 1))
        with pytest.raises(VistaInputError, match="dim must be >= 2, got 1"):
            fourier_embedding(torch.zeros(1), 1)


class TestSizeEmbedding:
    def test_fields_in_order(self):
        """Row n is [F(sizes[n, 0]) | F(sizes[n, 1]) | …]: SDXL's field order."""
        sizes = torch.tensor([[1024.0, 2048.0, 0.0], [8.0, 16.0, 24.0]])
        out = size_embedding(sizes)
        assert out.shape == (2, 3 * 256)
        for n in range(2):
            for k in range(3):
                assert torch.equal(out[n, k * 256 : (k + 1) * 256], fourier_embedding(sizes[n, k : k + 1])[0])

    def test_decodes_back(self):
        assert decode(sdxl_y(torch.zeros(1280), [1024, 2048, 0, 512, 1024, 1024])) == [1024, 2048, 0, 512, 1024, 1024]

    def test_exception(self):
        with pytest.raises(VistaInputError, match=r"sizes must have shape \(N, K\), got \(6,\)"):
            size_embedding(torch.zeros(6))


class TestWindowCropTarget:
    def test_offsets_and_sizes_in_px(self):
        windows = plan_windows(128, 256, 128, 128, 64, 64)
        assert window_crop_target(windows, 8).tolist() == [[0, 0, 1024, 1024], [0, 512, 1024, 1024], [0, 1024, 1024, 1024]]

    def test_convention_wrapped_window_keeps_its_offset(self):
        """A window of a 360° canvas that runs past the right edge is told its start column, not a negative crop."""
        (last,) = [w for w in plan_windows(16, 48, 16, 32, 16, 16, wrap_x=True) if w.x + w.w > 48]
        assert window_crop_target([last], 8).tolist() == [[0, last.x * 8, 128, 256]]

    def test_exception(self):
        with pytest.raises(VistaInputError, match="factor must be >= 1 image px per latent px, got 0"):
            window_crop_target([Window(0, 0, 8, 8)], 0)


class TestWindowSizeConditioning:
    def test_window_equals_canvas_keeps_y(self):
        """One window at (0, 0) covering the canvas: crop 0, target = canvas, as ComfyUI's default y says."""
        y = sdxl_y(torch.randn(1280), [1024, 2048, 0, 0, 1024, 2048])[None].repeat(3, 1)
        out = window_size_conditioning(y, [Window(0, 0, 128, 256)], 8)
        assert torch.equal(out, y)

    def test_windows_told_their_crop_and_size_original_kept(self):
        pooled = torch.randn(2, 1280)
        y = torch.stack([sdxl_y(p, [1024, 2048, 0, 0, 1024, 2048]) for p in pooled])  # (B=2, 2816), canvas defaults
        windows = plan_windows(128, 256, 128, 128, 64, 64)
        rows = torch.cat([y] * 3)  # repeat_for_windows: window-major, R = 2 rows per window
        out = window_size_conditioning(rows, windows, 8)
        for i, win in enumerate(windows):
            for b in range(2):
                row = out[i * 2 + b]
                assert torch.equal(row[:1280], pooled[b])
                assert decode(row) == [1024, 2048, win.y * 8, win.x * 8, 1024, 1024]

    def test_groups_layout(self):
        """Two conditionings batched in one call, each repeated to the window batch: (g n r) rows."""
        y = sdxl_y(torch.zeros(1280), [256, 512, 0, 0, 256, 512])[None]
        windows = [Window(0, 0, 32, 32), Window(0, 16, 32, 32), Window(0, 32, 32, 32)]
        out = window_size_conditioning(y.repeat(2 * 3 * 2, 1), windows, 8, groups=2)
        told = [decode(row)[3] for row in out]
        assert told == [0, 0, 128, 128, 256, 256] * 2

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
    def test_dtype_kept(self, dtype):
        y = torch.zeros(2, 2816, dtype=dtype)
        out = window_size_conditioning(y, [Window(0, 0, 8, 8), Window(0, 8, 8, 8)], 8)
        assert out.dtype == dtype and torch.equal(out[:, :-1024], y[:, :-1024])

    def test_input_not_modified(self):
        y = torch.zeros(1, 2816)
        window_size_conditioning(y, [Window(0, 4, 8, 8)], 8)
        assert torch.equal(y, torch.zeros(1, 2816))

    def test_exception(self):
        with pytest.raises(VistaInputError, match=r"y must have shape \(batch, pooled \+ 6x256\), got \(2, 1536\)"):
            window_size_conditioning(torch.zeros(2, 1536), [Window(0, 0, 8, 8)], 8)
        with pytest.raises(VistaInputError, match="y batch 3 must be a multiple of groups=1 x 2 windows"):
            window_size_conditioning(torch.zeros(3, 2816), [Window(0, 0, 8, 8), Window(0, 8, 8, 8)], 8)


class TestWindowCallKwargsSizeFactor:
    """core/conditioning.window_call_kwargs with ``size_factor``: the Tiled Diffusion route's per-window ``y``."""

    def test_y_told_each_window(self):
        y = torch.stack([sdxl_y(torch.randn(1280), [128, 384, 0, 0, 128, 384]) for _ in range(2)])  # uncond + cond
        windows = plan_windows(16, 48, 16, 16, 16, 16)
        out = window_call_kwargs({"y": y, "c_crossattn": torch.zeros(2, 77, 8)}, (16, 48), windows, size_factor=8)
        assert out["c_crossattn"].shape == (6, 77, 8)
        assert [decode(row)[2:] for row in out["y"]] == [[0, x, 128, 128] for x in (0, 0, 128, 128, 256, 256)]
        assert torch.equal(out["y"][:, :1280], y[:, :1280].repeat(3, 1))

    def test_without_size_factor_y_repeated(self):
        y = torch.randn(2, 2816)
        out = window_call_kwargs({"y": y}, (16, 48), plan_windows(16, 48, 16, 16, 16, 16))
        assert torch.equal(out["y"], y.repeat(3, 1))
