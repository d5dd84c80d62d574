"""core/zoom/composite.py: feathered pixel-space render of decoded zoom levels (issue [R] 11)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vista.core.checks import VistaInputError
from vista.core.zoom.stack import area_down, center_crop, render_stack
from vista.core.zoom.composite import check_feather, composite_levels, feather_ramp, max_feather


def levels(n=3, c=3, h=32, w=48, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def interior(x, feather):
    """The block minus its feather-wide ring."""
    f = int(feather)
    return x[..., f : x.shape[-2] - f, f : x.shape[-1] - f]


class TestMaxFeather:
    def test_quarter_of_the_block(self):
        assert max_feather(512, 512, 2) == 64 and max_feather(512, 768, 4) == 32

    def test_check_accepts_the_range(self):
        check_feather(64, 64, 2, 0)
        check_feather(64, 64, 2, 8)

    @pytest.mark.parametrize("feather", [-1, 8.5, 100])
    def test_exception(self, feather):
        with pytest.raises(VistaInputError, match=r"feather=.* px must be in \[0, 8\] px for 64x64 px levels with "
                                                  r"zoom factor p=2 \(a quarter of the pasted 32x32 px centre block\)"):
            check_feather(64, 64, 2, feather)


class TestFeatherRamp:
    def test_zero_is_hard_paste(self):
        assert torch.equal(feather_ramp(4, 6, 0), torch.ones(4, 6))

    def test_linear_from_the_edge(self):
        ramp = feather_ramp(16, 16, 4.0)
        assert ramp[8, :5].tolist() == [0.125, 0.375, 0.625, 0.875, 1.0]
        assert ramp[4:12, 4:12].eq(1).all()

    def test_symmetric(self):
        ramp = feather_ramp(12, 20, 3.0)
        assert torch.equal(ramp, ramp.flip(0)) and torch.equal(ramp, ramp.flip(1))

    def test_dtype_device(self):
        assert feather_ramp(4, 4, 1.0, dtype=torch.float16).dtype == torch.float16

    def test_exception(self):
        with pytest.raises(VistaInputError, match="feather must be >= 0 px, got -1"):
            feather_ramp(4, 4, -1)


class TestCompositeLevels:
    @pytest.mark.parametrize("p", [2, 4])
    def test_hard_paste_is_alg1_render(self, p):
        x = levels(3, h=16 * p, w=16 * p, seed=1)
        torch.testing.assert_close(composite_levels(x, p, 0), render_stack(x, p))

    @pytest.mark.parametrize("p,feather", [(2, 4), (2, 8), (4, 2)])
    def test_consistent_beyond_the_ring(self, p, feather):
        x = levels(4, h=32 * p, w=32 * p, seed=2)
        out = composite_levels(x, p, feather)
        for i in range(3):
            inner = area_down(out[i + 1 : i + 2], p)[0]
            torch.testing.assert_close(interior(center_crop(out[i], p), feather), interior(inner, feather),
                                       atol=1e-12, rtol=0)

    def test_outside_the_block_untouched(self):
        x = levels(3, seed=3)
        out = composite_levels(x, 2, 4)
        ring = torch.ones(32, 48, dtype=torch.bool)
        ring[8:24, 12:36] = False
        assert torch.equal(out[:, :, ring], x[:, :, ring])
        assert torch.equal(out[-1], x[-1])

    def test_ramp_inside_the_block(self):
        """Level 0 black, level 1 white: the block's row is the feather ramp itself."""
        x = torch.stack([torch.zeros(1, 32, 32), torch.ones(1, 32, 32)]).double()
        out = composite_levels(x, 2, 4)
        torch.testing.assert_close(center_crop(out[0, 0], 2), feather_ramp(16, 16, 4, dtype=torch.float64))

    def test_consistent_input_unchanged(self):
        """Renders of one stack already agree: compositing them is the identity, feathered or not."""
        r = render_stack(levels(3, h=32, w=32, seed=4), 2)
        torch.testing.assert_close(composite_levels(r, 2, 4), r, atol=1e-12, rtol=0)

    def test_deepest_reaches_level_zero_through_the_middle(self):
        x = torch.zeros(3, 1, 32, 32, dtype=torch.float64)
        x[2] = 1.0
        out = composite_levels(x, 2, 0)
        assert out[0, 0, 12:20, 12:20].eq(1).all() and out[0, 0, 8:12].eq(0).all()

    @settings(max_examples=15, deadline=None)
    @given(n=st.integers(1, 5), p=st.sampled_from([2, 4]), k=st.integers(1, 3), feather=st.integers(0, 4))
    def test_range_preserved(self, n, p, k, feather):
        """A convex blend of [0, 1] images stays in [0, 1] (decoded images keep their range)."""
        x = levels(n, h=16 * p * k, w=16 * p * k, seed=n + k)
        out = composite_levels(x, p, min(feather, max_feather(16 * p * k, 16 * p * k, p)))
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1

    def test_does_not_modify_input(self):
        x = levels(3, seed=5)
        before = x.clone()
        composite_levels(x, 2, 4)
        assert torch.equal(x, before)

    def test_exception_size(self):
        with pytest.raises(VistaInputError, match=r"images height and width must be divisible by 2·p = 8 \(px\)"):
            composite_levels(torch.zeros(2, 3, 36, 36), 4, 0)

    def test_exception_feather(self):
        with pytest.raises(VistaInputError, match=r"feather=20 px must be in \[0, 8\] px"):
            composite_levels(torch.zeros(2, 3, 64, 64), 2, 20)

    def test_exception_rank(self):
        with pytest.raises(VistaInputError, match=r"images must have shape \(N, C, H, W\)"):
            composite_levels(torch.zeros(3, 64, 64), 2, 0)
