"""core/fusion/style_alignment.py: slerp endpoints, unit variance, tiles and remainder tiles (GVCF eq. 15)."""
import math

import pytest
import torch

from vista.core.checks import VistaInputError
from vista.core.fusion.style_alignment import reference_from_canvas, slerp, style_align_noise, tile_offsets

F64 = torch.float64


def gaussian(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class TestSlerp:
    def test_smoke_shape(self):
        a, b = gaussian(3, 4, 8, 8), gaussian(3, 4, 8, 8, seed=1)
        assert slerp(a, b, 0.3).shape == (3, 4, 8, 8)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.float32, F64])
    def test_endpoints_exact(self, dtype):
        a, b = gaussian(3, 4, 8, 8, dtype=dtype), gaussian(3, 4, 8, 8, seed=1, dtype=dtype)
        assert torch.equal(slerp(a, b, 0.0), a)
        assert torch.equal(slerp(a, b, 1.0), b)

    def test_orthogonal_unit_vectors_stay_on_the_circle(self):
        a, b = torch.tensor([[1.0, 0.0]], dtype=F64), torch.tensor([[0.0, 1.0]], dtype=F64)
        out = slerp(a, b, 1 / 3)
        torch.testing.assert_close(out, torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]], dtype=F64))

    def test_per_sample_angle(self):
        """Each sample has its own angle: slerping a batch equals slerping its samples one by one."""
        a, b = gaussian(4, 2, 3, 3, dtype=F64), gaussian(4, 2, 3, 3, seed=1, dtype=F64)
        rows = torch.cat([slerp(a[i : i + 1], b[i : i + 1], 0.4) for i in range(4)])
        torch.testing.assert_close(slerp(a, b, 0.4), rows)

    @pytest.mark.parametrize("sign", [1.0, -1.0])
    def test_parallel_vectors_fall_back_to_lerp(self, sign):
        a = gaussian(2, 4, 4, dtype=F64)
        out = slerp(a, sign * 2 * a, 0.25)
        assert out.isfinite().all()
        torch.testing.assert_close(out, 0.75 * a + 0.25 * sign * 2 * a)

    def test_unit_variance(self):
        """Independent unit Gaussians of 4·64·64 elements: the slerp has variance 1 ± 0.05.

        They are nearly orthogonal (|cos| ~ 1/sqrt(16384) = 0.008) and of norm sqrt(16384)(1 ± 0.6 %),
        so the variance deviates by well under 5 %; the sample variance over 16384 values adds ~1 %.
        """
        a, b = gaussian(16, 4, 64, 64, dtype=F64), gaussian(16, 4, 64, 64, seed=1, dtype=F64)
        for alpha in (0.2, 0.4, 0.5, 0.8):
            var = slerp(a, b, alpha).flatten(1).var(1)
            torch.testing.assert_close(var, torch.ones_like(var), rtol=0, atol=0.05)

    def test_exception_shape(self):
        with pytest.raises(VistaInputError, match="same shape"):
            slerp(torch.zeros(2, 3), torch.zeros(2, 4), 0.5)

    def test_exception_rank(self):
        with pytest.raises(VistaInputError, match="at least one non-batch dim"):
            slerp(torch.zeros(3), torch.zeros(3), 0.5)

    @pytest.mark.parametrize("alpha", [-0.1, 1.5])
    def test_exception_alpha(self, alpha):
        with pytest.raises(VistaInputError, match="alpha must be in"):
            slerp(torch.zeros(2, 3), torch.ones(2, 3), alpha)


class TestTileOffsets:
    def test_remainder(self):
        assert tile_offsets(10, 4) == [0, 4, 8] and tile_offsets(8, 4) == [0, 4]

    @pytest.mark.parametrize("tile", [0, 11])
    def test_exception(self, tile):
        with pytest.raises(VistaInputError, match="tile must be in"):
            tile_offsets(10, tile)


class TestReferenceFromCanvas:
    def test_shape_and_copy(self):
        noise = gaussian(2, 4, 16, 40)
        ref = reference_from_canvas(noise, 16, 16, 0, 1)
        assert ref.shape == (2, 4, 16, 16) and torch.equal(ref, noise[..., 16:32])
        ref.zero_()
        assert noise[..., 16:32].any()

    def test_exception_shape(self):
        with pytest.raises(VistaInputError, match="noise must have shape"):
            reference_from_canvas(torch.zeros(4, 16, 16), 8, 8)

    def test_exception_tile(self):
        with pytest.raises(VistaInputError, match="must be between 1x1 and the canvas"):
            reference_from_canvas(torch.zeros(1, 4, 16, 16), 32, 8)

    def test_exception_row(self):
        with pytest.raises(VistaInputError, match="row must be in"):
            reference_from_canvas(torch.zeros(1, 4, 16, 20), 8, 8, 2, 0)

    def test_exception_col_remainder(self):
        with pytest.raises(VistaInputError, match="col must be in"):
            reference_from_canvas(torch.zeros(1, 4, 16, 20), 8, 8, 0, 2)  # col 2 is a remainder tile (4 wide)


class TestStyleAlignNoise:
    def test_smoke_shape(self):
        out = style_align_noise(gaussian(2, 4, 16, 40), gaussian(1, 4, 16, 16, seed=1), 16, 16, 0.4)
        assert out.shape == (2, 4, 16, 40)

    def test_alpha_zero_is_input(self):
        noise = gaussian(2, 4, 20, 44)
        assert torch.equal(style_align_noise(noise, gaussian(2, 4, 16, 16, seed=1), 16, 16, 0.0), noise)

    def test_alpha_one_tiles_the_reference(self):
        """Full tiles become the reference, remainder tiles its top-left crop (20x44 canvas, 16x16 tiles)."""
        ref = gaussian(1, 4, 16, 16, seed=1)
        out = style_align_noise(gaussian(2, 4, 20, 44), ref, 16, 16, 1.0)
        for y, h in [(0, 16), (16, 4)]:
            for x, w in [(0, 16), (16, 16), (32, 12)]:
                assert torch.equal(out[:, :, y : y + h, x : x + w], ref[:, :, :h, :w].expand(2, -1, -1, -1))

    def test_each_tile_is_its_own_slerp(self):
        noise, ref = gaussian(2, 4, 20, 44, dtype=F64), gaussian(2, 4, 16, 16, seed=1, dtype=F64)
        out = style_align_noise(noise, ref, 16, 16, 0.4)
        torch.testing.assert_close(out[..., 16:20, 32:44], slerp(noise[..., 16:20, 32:44], ref[..., :4, :12], 0.4))
        torch.testing.assert_close(out[..., 0:16, 16:32], slerp(noise[..., 0:16, 16:32], ref, 0.4))

    def test_aligned_tiles_get_closer(self):
        noise = gaussian(1, 4, 32, 64, dtype=F64)
        ref = reference_from_canvas(noise, 32, 32, 0, 0)
        before = (noise[..., 32:] - noise[..., :32]).norm()
        out = style_align_noise(noise, ref, 32, 32, 0.4)
        torch.testing.assert_close(out[..., :32], noise[..., :32])  # the reference tile slerps toward itself
        assert (out[..., 32:] - out[..., :32]).norm() < before

    def test_same_seed_same_noise(self):
        make = lambda seed: style_align_noise(gaussian(2, 4, 20, 44, seed=seed), gaussian(1, 4, 16, 16, seed=seed + 1), 16, 16, 0.4)
        assert torch.equal(make(5), make(5)) and not torch.equal(make(5), make(6))

    def test_unit_variance_per_tile(self):
        """Every tile, remainders included, keeps variance 1 ± 0.1 at alpha 0.4 (unit Gaussians).

        Smallest tile here has 4·8·12 = 384 elements: the sample variance has standard error
        sqrt(2/384) = 7 % per sample, so the test averages 16 samples (1.8 %), tolerance > 5 s.e.
        """
        noise, ref = gaussian(16, 4, 72, 76, dtype=F64), gaussian(1, 4, 32, 32, seed=1, dtype=F64)
        out = style_align_noise(noise, ref, 32, 32, 0.4)
        for y, h in [(0, 32), (32, 32), (64, 8)]:
            for x, w in [(0, 32), (32, 32), (64, 12)]:
                var = out[:, :, y : y + h, x : x + w].flatten(1).var(1).mean()
                assert abs(float(var) - 1) < 0.1, (y, x, float(var))

    def test_exception_noise_shape(self):
        with pytest.raises(VistaInputError, match="noise must have shape"):
            style_align_noise(torch.zeros(4, 16, 16), torch.zeros(1, 4, 8, 8), 8, 8, 0.4)

    def test_exception_reference_shape(self):
        with pytest.raises(VistaInputError, match="reference must have shape"):
            style_align_noise(torch.zeros(1, 4, 16, 16), torch.zeros(4, 8, 8), 8, 8, 0.4)

    def test_exception_reference_batch(self):
        with pytest.raises(VistaInputError, match="reference must be"):
            style_align_noise(torch.zeros(2, 4, 16, 16), torch.zeros(3, 4, 8, 8), 8, 8, 0.4)

    def test_exception_reference_too_small(self):
        with pytest.raises(VistaInputError, match="at least the tile"):
            style_align_noise(torch.zeros(1, 4, 16, 16), torch.zeros(1, 4, 4, 8), 8, 8, 0.4)

    def test_exception_tile(self):
        with pytest.raises(VistaInputError, match="tile must be in"):
            style_align_noise(torch.zeros(1, 4, 16, 16), torch.zeros(1, 4, 32, 32), 32, 8, 0.4)

    def test_exception_alpha(self):
        with pytest.raises(VistaInputError, match="alpha must be in"):
            style_align_noise(torch.zeros(1, 4, 16, 16), torch.zeros(1, 4, 8, 8), 8, 8, 1.2)
