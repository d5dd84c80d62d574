"""Node tier: Vista Style Alignment inside the real host (COMFYUI_PATH), no server."""
import pytest
import torch

from host import import_host, load_checkpoint


@pytest.fixture(scope="module")
def host():
    comfy = import_host()
    from vista.nodes.style_alignment import VistaStyleAlignment

    model, _, _ = load_checkpoint()
    return comfy, VistaStyleAlignment, model


def noise_node(node, model, **kw):
    args = dict(noise_seed=11, window_width=256, window_height=256, alpha=0.4, reference="seeded")
    args.update(kw)
    return node.execute(model, **args).result[0]


def random_noise(comfy, latent: dict, seed: int):
    """What ComfyUI's RandomNoise (Noise_RandomNoise.generate_noise) returns."""
    return comfy.sample.prepare_noise(latent["samples"], seed, latent.get("batch_index"))


class TestStyleAlignmentNode:
    def test_alpha_zero_is_random_noise(self, host):
        comfy, node, model = host
        latent = {"samples": torch.zeros(2, 4, 32, 80)}
        noise = noise_node(node, model, alpha=0.0)
        assert noise.seed == 11
        assert torch.equal(noise.generate_noise(latent), random_noise(comfy, latent, 11))

    @pytest.mark.parametrize("reference", ["seeded", "canvas crop"])
    def test_same_seed_same_noise(self, host, reference):
        comfy, node, model = host
        latent = {"samples": torch.zeros(1, 4, 32, 80)}
        a = noise_node(node, model, reference=reference).generate_noise(latent)
        b = noise_node(node, model, reference=reference).generate_noise(latent)
        c = noise_node(node, model, reference=reference, noise_seed=12).generate_noise(latent)
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.shape == (1, 4, 32, 80) and not torch.equal(a, random_noise(comfy, latent, 11))

    def test_tiles_move_toward_reference(self, host):
        """alpha 1 tiles the canvas with the reference: the first two full tiles are equal."""
        _, node, model = host
        out = noise_node(node, model, alpha=1.0).generate_noise({"samples": torch.zeros(1, 4, 32, 80)})
        assert torch.equal(out[..., :32], out[..., 32:64])

    @pytest.mark.parametrize("reference", ["seeded", "canvas crop"])
    def test_batch_index_honoured(self, host, reference):
        """A latent with batch_index [2] gets the noise of item 2 of the full batch, like RandomNoise."""
        _, node, model = host
        noise = noise_node(node, model, reference=reference)
        full = noise.generate_noise({"samples": torch.zeros(3, 4, 32, 64)})
        picked = noise.generate_noise({"samples": torch.zeros(1, 4, 32, 64), "batch_index": [2]})
        assert torch.equal(picked[0], full[2])

    def test_tile_larger_than_canvas_is_clamped_with_warning(self, host, caplog):
        """Issue [R] 14 (d): one rule on every node for a window larger than the canvas: clamp it, warn naming the
        input (as Vista Tiled Diffusion and the Latent Fusion Sampler do). One tile = the whole canvas."""
        comfy, node, model = host
        latent = {"samples": torch.zeros(1, 4, 64, 32)}
        with caplog.at_level("WARNING"):
            out = noise_node(node, model, window_width=512, alpha=1.0).generate_noise(latent)
        assert "Vista Style Alignment: window_width=512 px is larger than the image/area width 256 px; using one " \
               "tile of 256 px there" in caplog.text
        clamped = noise_node(node, model, window_width=256, alpha=1.0).generate_noise(latent)
        assert torch.equal(out, clamped)

    def test_video_latent_refused(self, host):
        _, node, model = host
        with pytest.raises(ValueError, match=r"^Vista Style Alignment: latent_image must be an image latent"):
            noise_node(node, model).generate_noise({"samples": torch.zeros(1, 16, 3, 32, 32)})

    def test_size_not_multiple_of_factor(self, host):
        _, node, model = host
        with pytest.raises(ValueError, match="window_height=100 px must be a positive multiple of 8"):
            noise_node(node, model, window_height=100)
