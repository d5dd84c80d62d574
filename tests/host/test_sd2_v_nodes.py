"""Node tier: Vista Tiled Diffusion and the Latent Fusion Sampler on an SD2.x v-prediction model (COMFYUI_PATH).

The MODEL is built in-process (tests/support/host.py ``sd2_v_model``: ``supported_models.SD20``, model type
V_PREDICTION, linear transformer projections, context 1024, 64 channels, 4 levels) and the CONDITIONING
directly (``sd2_conditioning``: OpenCLIP-H context (B, 77, 1024)). Every Vista step goes through the model's
``model_sampling`` (the sampler gets denoised x0 from ComfyUI, whatever the parameterisation), so nothing in
Vista assumes eps; these tests check it on a model whose network predicts v. 768 px windows are SD2's native
size; the tests use 128-256 px windows (16-32 latent px) for 2 shared CPU cores.
"""
import pytest
import torch

from host import import_host, sd2_conditioning, sd2_v_model

CFG, SEED = 5.0, 5


@pytest.fixture(scope="module")
def host():
    comfy = import_host()
    from vista.nodes.latent_fusion import VistaLatentFusionSampler
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    return comfy, VistaTiledDiffusion, VistaLatentFusionSampler, sd2_v_model(), sd2_conditioning(1), sd2_conditioning(2)


def sample(comfy, model, pos, neg, height, width, steps=2, sampler="euler"):
    latent = torch.zeros(1, 4, height, width)
    noise = comfy.sample.prepare_noise(latent, SEED)
    return comfy.sample.sample(model, noise, steps, CFG, sampler, "normal", pos, neg, latent, disable_pbar=True, seed=SEED)


def sample_custom(comfy, model, sampler, pos, neg, height, width, steps=2, seed=SEED):
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(pos, neg)
    guider.set_cfg(CFG)
    latent = torch.zeros(1, 4, height, width)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
    return guider.sample(comfy.sample.prepare_noise(latent, SEED), latent, sampler, sigmas, disable_pbar=True, seed=seed)


def tiled(node, model, window, stride, **kw):
    args = dict(window_width=window, window_height=window, stride_x=stride, stride_y=stride, weight_mode="guided",
                wrap_x=False, window_batch_size=4)
    args.update(kw)
    return node.execute(model, **args).result[0]


def fusion(node, window, stride, **kw):
    args = dict(window_width=window, window_height=window, stride_x=stride, stride_y=stride, weight_mode="guided",
                wrap_x=False, window_batch_size=4, eta=0.0, s_noise=1.0, variance_corrected=True)
    args.update(kw)
    return node.execute(**args).result[0]


def relative(a, b) -> float:
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)


class TestSD2VPrediction:
    def test_model_is_v_prediction(self, host):
        comfy, _, _, model, *_ = host
        from vista.nodes._common import latent_factor, takes_size_conditioning, unet_alignment

        assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.V_PREDICTION)
        assert type(model.model.model_config).__name__ == "SD20" and model.model.model_config.unet_config["context_dim"] == 1024
        assert latent_factor(model) == 8 and unet_alignment(model) == 8 and not takes_size_conditioning(model)

    def test_tiled_window_equals_canvas_matches_unpatched(self, host):
        """One window covering the canvas = the unpatched KSampler (tolerance 1e-6 x max |latent|; measured 0)."""
        comfy, tiled_node, _, model, pos, neg = host
        plain = sample(comfy, model, pos, neg, 16, 32)
        patched = sample(comfy, tiled(tiled_node, model, 256, 128, window_height=128, weight_mode="uniform"), pos, neg, 16, 32)
        print(f"\nSD2-v tiled (window = canvas) vs unpatched: relative diff {relative(patched, plain):.1e}")
        assert relative(patched, plain) <= 1e-6

    @pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])
    def test_tiled_panorama(self, host, sampler):
        comfy, tiled_node, _, model, pos, neg = host
        out = sample(comfy, tiled(tiled_node, model, 128, 64, wrap_x=sampler == "euler_ancestral"), pos, neg, 16, 48,
                     sampler=sampler)
        assert out.shape == (1, 4, 16, 48) and torch.isfinite(out).all()

    def test_fusion_window_equals_canvas_matches_stock_euler(self, host):
        """eta 0, one window covering the canvas = SamplerCustomAdvanced with stock euler (1e-5 x max |latent|)."""
        comfy, _, fusion_node, model, pos, neg = host
        fused = sample_custom(comfy, model, fusion(fusion_node, 256, 128, window_height=128), pos, neg, 16, 32)
        euler = sample_custom(comfy, model, comfy.samplers.sampler_object("euler"), pos, neg, 16, 32)
        print(f"\nSD2-v latent fusion (window = canvas) vs stock euler: relative diff {relative(fused, euler):.1e}")
        assert relative(fused, euler) <= 1e-5

    def test_fusion_eta0_panorama_equals_tiled_euler(self, host):
        """eta 0 latent fusion = Tiled Diffusion + stock euler on a 3-window panorama (5e-5 x max |latent|: the two
        routes batch the windows 2 and 4 per call, so the CPU kernels differ; measured 1.0e-5 at two threads and
        1.3e-5 at one, CI's shards — a wrong fusion is off by orders of magnitude more)."""
        comfy, tiled_node, fusion_node, model, pos, neg = host
        fused = sample_custom(comfy, model, fusion(fusion_node, 128, 64, window_batch_size=2), pos, neg, 16, 32)
        euler = sample_custom(comfy, tiled(tiled_node, model, 128, 64), comfy.samplers.sampler_object("euler"), pos, neg,
                              16, 32)
        assert torch.isfinite(fused).all() and relative(fused, euler) <= 5e-5

    @pytest.mark.parametrize("variance_corrected", [True, False])
    def test_fusion_eta1_panorama(self, host, variance_corrected):
        comfy, _, fusion_node, model, pos, neg = host
        sampler = fusion(fusion_node, 128, 64, eta=1.0, variance_corrected=variance_corrected, wrap_x=True)
        out = sample_custom(comfy, model, sampler, pos, neg, 16, 48)
        assert out.shape == (1, 4, 16, 48) and torch.isfinite(out).all()
