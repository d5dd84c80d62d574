"""Node tier: Vista MAD Attention with Vista Tiled Diffusion inside the real host (COMFYUI_PATH)."""
import pytest
import torch

from host import encode, import_host, load_checkpoint


@pytest.fixture(scope="module")
def host():
    comfy = import_host()
    from vista.nodes.mad import VistaMADAttention
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    model, clip, _ = load_checkpoint()
    return comfy, VistaTiledDiffusion, VistaMADAttention, model, encode(clip, "a wide beach"), encode(clip, "")


def sample(comfy, model, positive, negative, height, width, steps=2, seed=3):
    latent = torch.zeros(1, 4, height, width)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", positive, negative, latent,
                               disable_pbar=True, seed=seed)


def tiled(node, model, window, stride, wrap=False):
    return node.execute(model, window_width=window, window_height=window, stride_x=stride, stride_y=stride,
                        weight_mode="uniform", wrap_x=wrap, window_batch_size=1).result[0]


def mad(node, model, tau):
    return node.execute(model, tau=tau, input_blocks=True, middle_block=True, output_blocks=True).result[0]


class TestMADNode:
    def test_one_window_equals_unpatched(self, host):
        """MAD over one window covering the canvas = the unpatched model (tolerance 1e-4)."""
        comfy, tiled_node, mad_node, model, pos, neg = host
        plain = sample(comfy, model, pos, neg, 32, 32)
        patched = sample(comfy, mad(mad_node, tiled(tiled_node, model, 256, 64), 1.0), pos, neg, 32, 32)
        assert (patched - plain).abs().max().item() <= 1e-4

    def test_tau_zero_equals_multidiffusion(self, host):
        comfy, tiled_node, mad_node, model, pos, neg = host
        base = tiled(tiled_node, model, 256, 128)
        plain = sample(comfy, base, pos, neg, 32, 64)
        off = sample(comfy, mad(mad_node, base, 0.0), pos, neg, 32, 64)
        assert (off - plain).abs().max().item() <= 1e-5

    @pytest.mark.parametrize("order", ["mad_then_tiled", "tiled_then_mad"])
    def test_merges_on_panorama(self, host, order):
        """Active MAD changes a multi-window panorama, in either chaining order, with wrap."""
        comfy, tiled_node, mad_node, model, pos, neg = host
        base = tiled(tiled_node, model, 256, 128, wrap=True)
        patched = (tiled(tiled_node, mad(mad_node, model, 1.0), 256, 128, wrap=True) if order == "mad_then_tiled"
                   else mad(mad_node, base, 1.0))
        plain, merged = sample(comfy, base, pos, neg, 32, 64), sample(comfy, patched, pos, neg, 32, 64)
        assert torch.isfinite(merged).all() and (merged - plain).abs().max().item() > 1e-3

    def test_no_blocks_selected(self, host):
        _, _, mad_node, model, *_ = host
        with pytest.raises(ValueError, match="no SpatialTransformer"):
            mad_node.execute(model, tau=0.3, input_blocks=False, middle_block=False, output_blocks=False)
