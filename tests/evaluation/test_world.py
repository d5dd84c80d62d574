"""bench/evaluation/world.py: the procedural landscape world of the coherence benchmark (issue [G])."""
import pytest
import torch

from vista.core.checks import VistaInputError
from vista.bench.evaluation.world import (LATENT_CHANNELS, PALETTES, SCENE_CLASSES, SKY_BAND, crop_layout, decode_latent,
                              encode_latent, random_crops, render_scene)

CLASSES = range(len(SCENE_CLASSES))


class TestRenderScene:
    @pytest.mark.parametrize("class_id", CLASSES)
    def test_smoke_shape_range(self, class_id):
        image, layout = render_scene(class_id, 0, 32, 192)
        assert image.shape == (3, 32, 192) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        assert layout["class_name"] == SCENE_CLASSES[class_id]
        assert layout["horizon_y"].shape == layout["skyline_y"].shape == (192,)
        assert layout["suns"].shape == (1, 3)

    def test_same_seed_same_scene(self):
        a, la = render_scene(1, 123, 48, 288)
        b, lb = render_scene(1, 123, 48, 288)
        assert torch.equal(a, b)
        assert all(torch.equal(la[k], lb[k]) for k in ("horizon_y", "skyline_y", "suns", "peaks", "sky_colour"))

    def test_other_seed_other_scene(self):
        assert not torch.equal(render_scene(0, 1, 32, 96)[0], render_scene(0, 2, 32, 96)[0])

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_dtype_is_a_cast_of_one_drawing(self, dtype):
        """The scene is drawn in float64 on the CPU whatever the output dtype."""
        ref, _ = render_scene(2, 5, 32, 64, dtype=torch.float64)
        out, layout = render_scene(2, 5, 32, 64, dtype=dtype)
        assert out.dtype == layout["suns"].dtype == dtype
        assert torch.equal(out, ref.to(dtype))

    @pytest.mark.parametrize("seed", range(6))
    @pytest.mark.parametrize("class_id", CLASSES)
    def test_layout_geometry(self, class_id, seed):
        """Flat horizon in its range, mountains on it, the one sun above the mountains and inside the canvas."""
        h, w = 40, 240
        _, layout = render_scene(class_id, seed, h, w, dtype=torch.float64)
        horizon = layout["horizon_y"]
        assert bool((horizon == horizon[0]).all()) and 0.55 * h - 1 <= horizon[0] <= 0.75 * h + 1
        assert bool((layout["skyline_y"] <= horizon + 0.5).all())
        y, x, r = layout["suns"][0].tolist()
        assert r == pytest.approx(PALETTES[class_id].sun_radius * h)
        assert r < x < w - r and y - r >= round(SKY_BAND * h)
        columns = slice(max(0, int(x - r)), int(x + r) + 1)
        assert y + r < layout["skyline_y"][columns].min()

    def test_mountains_are_smooth_and_wide(self):
        """No cliffs (≤ 0.05 H per px) and peaks wider than a third of the height: a window sees part of a slope."""
        h = 64
        for seed in range(10):
            _, layout = render_scene(seed % 3, seed, h, 6 * h, dtype=torch.float64)
            assert layout["skyline_y"].diff().abs().max() <= 0.05 * h
            assert bool((layout["peaks"][:, 1] >= 0.35 * h).all())

    @pytest.mark.parametrize("class_id", CLASSES)
    def test_sky_colour_is_the_top_band_mean(self, class_id):
        image, layout = render_scene(class_id, 9, 64, 128)
        band = layout["sky_band"]
        assert band == round(SKY_BAND * 64)
        torch.testing.assert_close(image[:, :band].mean(dim=(1, 2)), layout["sky_colour"], atol=1e-6, rtol=0)

    def test_sky_is_constant_along_x_above_the_sun(self):
        image, layout = render_scene(0, 4, 32, 96)
        band = image[:, : layout["sky_band"]]
        assert torch.equal(band, band[:, :, :1].expand_as(band))

    def test_horizon_row_is_the_first_ground_row(self):
        """Above the horizon row the column is sky or mountain; from it on, ground (a different colour)."""
        image, layout = render_scene(0, 3, 64, 64, dtype=torch.float64)
        row = int(layout["horizon_y"][0])
        ground, above = image[:, row + 1 :].mean(dim=(1, 2)), image[:, row - 1].mean(1)
        assert (image[:, row].mean(1) - ground).norm() < (above - ground).norm()

    def test_zoom_is_the_same_geometry(self):
        """All geometry scales with the height: a scene twice as tall has its horizon twice as low."""
        _, small = render_scene(1, 11, 32, 96, dtype=torch.float64)
        _, large = render_scene(1, 11, 64, 192, dtype=torch.float64)
        assert abs(2 * small["horizon_y"][0] - large["horizon_y"][0]) <= 2
        torch.testing.assert_close(2 * small["suns"][0, 2], large["suns"][0, 2])

    def test_exception_class_id(self):
        with pytest.raises(VistaInputError, match=r"class_id must be one of 0..2 \(day, dusk, night\), got 3"):
            render_scene(3, 0, 32, 32)

    def test_exception_size(self):
        with pytest.raises(VistaInputError, match="height must be >= 16 px"):
            render_scene(0, 0, 8, 32)


class TestCropLayout:
    def test_columns_and_rows_shift(self):
        _, layout = render_scene(0, 2, 64, 256, dtype=torch.float64)
        cropped = crop_layout(layout, 8, 40, 32, 32)
        torch.testing.assert_close(cropped["horizon_y"], layout["horizon_y"][40:72] - 8)
        torch.testing.assert_close(cropped["skyline_y"], layout["skyline_y"][40:72] - 8)

    def test_suns_kept_only_where_they_reach_into_the_crop(self):
        _, layout = render_scene(0, 2, 32, 192, dtype=torch.float64)
        y, x, r = layout["suns"][0].tolist()
        left = min(max(int(x) - 16, 0), 192 - 32)
        inside = crop_layout(layout, 0, left, 32, 32)["suns"]
        torch.testing.assert_close(inside, torch.tensor([[y, x - left, r]], dtype=torch.float64))
        away = int(x + r) + 2 if x + r + 34 <= 192 else 0
        assert crop_layout(layout, 0, away, 32, 32)["suns"].shape == (0, 3)


class TestRandomCrops:
    def test_deterministic(self):
        a, b = (random_crops(3, 6, 16, scene_windows=4, zooms=(1, 2), crops_per_scene=2) for _ in range(2))
        assert all(torch.equal(a[k], b[k]) for k in a)

    def test_crops_are_cut_from_their_scenes(self):
        """Every crop is re-rendered exactly from (class, scene seed, zoom, offsets)."""
        size, windows = 16, 4
        batch = random_crops(5, 5, size, scene_windows=windows, zooms=(1, 2), crops_per_scene=2)
        assert batch["images"].shape == (5, 3, size, size)
        for i in range(5):
            zoom = int(batch["zooms"][i])
            scene, _ = render_scene(int(batch["class_ids"][i]), int(batch["scene_seeds"][i]), zoom * size,
                                    windows * zoom * size)
            top, left = batch["offsets"][i].tolist()
            assert torch.equal(batch["images"][i], scene[:, top : top + size, left : left + size])

    def test_classes_and_zooms_respected(self):
        batch = random_crops(0, 12, 16, scene_windows=2, zooms=(2,), classes=(1,), crops_per_scene=3)
        assert set(batch["class_ids"].tolist()) == {1} and set(batch["zooms"].tolist()) == {2}

    def test_exception_size(self):
        with pytest.raises(VistaInputError, match="n must be >= 1 and size >= 16 px"):
            random_crops(0, 4, 8)

    def test_exception_zooms(self):
        with pytest.raises(VistaInputError, match="zooms must be positive ints"):
            random_crops(0, 4, 16, zooms=(0,))

    def test_exception_classes(self):
        with pytest.raises(VistaInputError, match="classes must be in 0..2"):
            random_crops(0, 4, 16, classes=(5,))

    def test_exception_scene_windows(self):
        with pytest.raises(VistaInputError, match="scene_windows and crops_per_scene must be >= 1"):
            random_crops(0, 4, 16, crops_per_scene=0)


class TestLatent:
    def test_shapes_and_round_trip_on_scenes(self):
        image, _ = render_scene(0, 3, 64, 128)
        z = encode_latent(image[None])
        assert z.shape == (1, LATENT_CHANNELS, 16, 32)
        back = decode_latent(z)
        assert back.shape == (1, 3, 64, 128)
        # lossy only in the top octaves: the scene comes back to a small mean error
        assert (back - image).abs().mean() < 0.03

    def test_constant_image_is_exact(self):
        x = torch.full((2, 3, 8, 8), 0.25)
        assert torch.allclose(decode_latent(encode_latent(x)), x)

    def test_encode_is_block_mean_and_decode_keeps_it(self):
        x = torch.randn(1, 3, 8, 8)
        z = encode_latent(x)
        assert torch.allclose(z[0, 0, 0, 0], x[0, 0, :4, :4].mean())
        ramp = torch.arange(8.0).repeat(1, 3, 8, 1)  # linear along x: decode then encode gives it back
        assert torch.allclose(encode_latent(decode_latent(ramp))[..., 1:-1], ramp[..., 1:-1], atol=1e-5)

    def test_bad_shapes_refused(self):
        with pytest.raises(VistaInputError, match="multiples of 4"):
            encode_latent(torch.zeros(1, 3, 6, 8))
        with pytest.raises(VistaInputError, match="latent must be"):
            decode_latent(torch.zeros(1, 48, 4, 4))
