"""bench/evaluation/zoom_metrics.py: seam and level-switch measurements (bench/zoom_seams.py, issue [R] 11)."""
import pytest
import torch

from vista.core.checks import VistaInputError
from vista.core.zoom.composite import composite_levels
from vista.bench.evaluation.zoom_metrics import (frame_differences, handover_ratio, seam_profile, seam_ratio, source_levels,
                                     switch_jump_ratio)
from vista.core.zoom.video import zoom_video_frames


def noise_levels(n=2, h=64, seed=0):
    return torch.rand(n, 3, h, h, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def smooth_levels(offsets, h=64):
    """Smooth textured levels (a slow sine pattern) at different brightness: levels that disagree."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(h, dtype=torch.float64), indexing="ij")
    pattern = 0.1 * torch.sin(x / 3) * torch.cos(y / 4)
    return torch.stack([(o + pattern).expand(3, h, h) for o in offsets])


class TestSeamProfile:
    def test_step_at_the_edge(self):
        x = torch.zeros(1, 32, 32)
        x[:, 8:24, 8:24] = 2.0
        profile = seam_profile(x, 2, 3)
        assert profile.tolist() == [0, 0, 0, 2, 0, 0, 0]

    def test_contour_offsets_inward_positive(self):
        """A step one pixel inside the block shows at t = +1."""
        x = torch.zeros(1, 32, 32)
        x[:, 9:23, 9:23] = 1.0
        assert seam_profile(x, 2, 2).tolist() == [0, 0, 0, 1, 0]

    def test_exception_reach(self):
        with pytest.raises(VistaInputError, match="reach must be >= 1 and fit inside the block"):
            seam_profile(torch.zeros(1, 32, 32), 2, 9)


class TestSeamRatio:
    def test_hard_paste_of_mismatching_content_is_a_seam(self):
        x = smooth_levels([0.2, 0.7])  # the deeper level much brighter: a visible step
        hard, soft = composite_levels(x, 2, 0)[0], composite_levels(x, 2, 4)[0]
        assert seam_ratio(hard, 2, 4) > 2 * seam_ratio(soft, 2, 4)

    def test_band_up_to_max_feather(self):
        """The widest feather (a quarter of the block) can still be measured (the reference zone shrinks)."""
        x = smooth_levels([0.2, 0.7], h=64)
        assert seam_ratio(composite_levels(x, 4, 0)[0], 4, 4) > 2 * seam_ratio(composite_levels(x, 4, 4)[0], 4, 4)

    def test_exception_band(self):
        with pytest.raises(VistaInputError, match="band=8 px leaves no room beyond it"):
            seam_ratio(torch.zeros(1, 32, 32), 4, 8)

    def test_no_seam_without_boundary(self):
        assert 0.8 < seam_ratio(noise_levels(1, seed=2)[0], 2, 4) < 1.3


class TestFrameDifferences:
    def test_values(self):
        frames = torch.zeros(3, 2, 2, 1)
        frames[1] = 1.0
        assert frame_differences(frames).tolist() == [1.0, 1.0]

    def test_exception(self):
        with pytest.raises(VistaInputError, match="at least 2 frames"):
            frame_differences(torch.zeros(1, 2, 2, 3))


class TestSourceLevels:
    def test_whole_level_frames(self):
        sources = source_levels(3, 2, 2, 16, 16)
        assert sources.shape == (5, 16, 16)
        assert sources[0, 0, 0] == 0 and sources[0, 8, 8] == 2 and sources[0, 5, 8] == 1
        assert sources[-1].eq(2).all()

    def test_matches_the_hard_edge_video(self):
        """Constant levels 0, 1, 2: the hard-edged video shows each pixel's source level."""
        images = torch.arange(3.0, dtype=torch.float64)[:, None, None, None].expand(3, 32, 32, 1).contiguous()
        frames = zoom_video_frames(images, 4, 3)[..., 0]
        torch.testing.assert_close(frames, source_levels(3, 4, 3, 32, 32).double(), atol=1e-9, rtol=0)


class TestSwitchJumpRatio:
    def test_inconsistent_levels_jump(self):
        """Two disagreeing levels, hard edges: switching pixels change more than a typical pixel."""
        images = smooth_levels([0.2, 0.7]).permute(0, 2, 3, 1)
        frames = zoom_video_frames(images, 2, 8)
        assert switch_jump_ratio(frames, source_levels(2, 2, 8, 64, 64)) > 3

    def test_consistent_flat_levels_do_not_jump(self):
        images = torch.full((2, 32, 32, 3), 0.5, dtype=torch.float64)
        frames = zoom_video_frames(images, 2, 4) + torch.arange(5.0, dtype=torch.float64).reshape(5, 1, 1, 1)
        assert switch_jump_ratio(frames, source_levels(2, 2, 4, 32, 32)) == pytest.approx(1.0)

    def test_exception_shape(self):
        with pytest.raises(VistaInputError, match=r"sources must have the frames' shape"):
            switch_jump_ratio(torch.zeros(3, 4, 4, 1), torch.zeros(3, 4, 5, dtype=torch.long))

    def test_exception_no_switch(self):
        with pytest.raises(VistaInputError, match="no pixel switches level"):
            switch_jump_ratio(torch.zeros(3, 4, 4, 1), torch.zeros(3, 4, 4, dtype=torch.long))


class TestHandoverRatio:
    def test_jump_at_switch(self):
        values = torch.tensor([0.0, 1, 2, 5, 6, 7, 10])  # steps of 1, jumps of 3 into frames 3 and 6
        assert handover_ratio(values.reshape(7, 1, 1, 1), 3) == 3.0

    def test_smooth(self):
        assert handover_ratio(torch.arange(7.0).reshape(7, 1, 1, 1), 3) == 1.0

    def test_exception_no_switch(self):
        with pytest.raises(VistaInputError, match="at least one level switch"):
            handover_ratio(torch.zeros(3, 2, 2, 1), 4)
