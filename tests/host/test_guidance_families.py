"""Node tier: Vista SyncDiffusion and Vista Multi-Scale Diffusion on the other model families (real host).

SDXL (y with size conditioning), SD2.x v-prediction and Flux (a 16-channel DiT sampled by flow matching) are
built in-process from the host's own classes (tests/support/host.py) UNDER ``torch.inference_mode()``, so their
weights are inference tensors as ComfyUI loads them; SyncDiffusion decodes with a seeded TAESD of the family's
latent channels, built by the host's own ``comfy.sd.VAE`` (4 channels for SD, 16 = TAEF1's layout for Flux).
Guidance must leave inference mode, back-propagate through each family's network, change the result, and leave
the host's weights untouched. Tiny canvases and 2 steps keep it cheap on CPU.
"""
import functools

import pytest
import torch

import host as support
from host import import_host

CFG, SEED = 5.0, 7
FAMILIES = ("sdxl", "sd2_v", "sd3")


@functools.lru_cache(maxsize=None)
def family(name: str):
    """(model, positive, negative, latent channels, window px) for a family, weights made under inference mode."""
    import_host()
    import comfy.model_base
    import comfy.supported_models

    with torch.inference_mode():
        if name == "sdxl":
            model = support._in_process_model(comfy.supported_models.Segmind_Vega, support.SDXL_SMALL_CONFIG, 41)
            return model, support.sdxl_conditioning(1), support.sdxl_conditioning(2), 4, 128
        if name == "sd2_v":
            model = support._in_process_model(comfy.supported_models.SD20, support.SD2_SMALL_CONFIG, 42,
                                              comfy.model_base.ModelType.V_PREDICTION)
            return model, support.sd2_conditioning(1), support.sd2_conditioning(2), 4, 128
        if name == "sd3":
            model, _ = support._tiny_dit(support._sd3_skeleton(support.SD3_DEPTH, support.SD3_POS_GRID), 44,
                                         {"depth": support.SD3_DEPTH})
            return model, support.dit_conditioning("sd3", 1), support.dit_conditioning("sd3", 2), 16, 128
        model, _ = support._tiny_dit(support._flux_skeleton(support.FLUX_WIDTH), 43,
                                     {"hidden_size": support.FLUX_WIDTH, "num_heads": support.FLUX_WIDTH // 128})
        return model, support.dit_conditioning("flux", 1), support.dit_conditioning("flux", 2), 16, 128


@functools.lru_cache(maxsize=None)
def taesd_vae(channels: int):
    """A seeded TAESD VAE for ``channels``-channel latents through the host's ``comfy.sd.VAE`` detection."""
    comfy = import_host()
    import comfy.sd
    import comfy.taesd.taesd

    generator = torch.Generator().manual_seed(50 + channels)
    module = comfy.taesd.taesd.TAESD(latent_channels=channels)
    state = {k: (torch.randn(v.shape, generator=generator) * 0.05 if v.is_floating_point() else v)
             for k, v in module.state_dict().items()}
    with torch.inference_mode():
        return comfy.sd.VAE(sd=state)


def fusion_sampler(window: int, guidance=None, **kw):
    from vista.nodes.latent_fusion import VistaLatentFusionSampler

    args = dict(window_width=window, window_height=window, stride_x=window // 2, stride_y=window // 2,
                weight_mode="guided", wrap_x=False, window_batch_size=4, eta=0.0, s_noise=1.0, variance_corrected=True,
                guidance=guidance)
    args.update(kw)
    return VistaLatentFusionSampler.execute(**args).result[0]


def sample(comfy, model, sampler, positive, negative, channels: int, height: int, width: int, steps: int = 2):
    with torch.inference_mode():
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(CFG)
        latent = torch.zeros(1, channels, height, width)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
        noise = comfy.sample.prepare_noise(latent, SEED)
        return guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=SEED)


def test_flux_refused_with_the_reason():
    """Flux's blocks update activations in place (and on v0.33.0 run RoPE through a kernel without a backward
    unless the host's training flag is set): autograd cannot differentiate them. The sampler says so, naming the
    guidance node, instead of a raw autograd error."""
    comfy = import_host()
    from vista.nodes.guidance import VistaMultiScaleDiffusion, VistaSyncDiffusion

    model, pos, neg, channels, window = family("flux")
    sync = VistaSyncDiffusion.execute(weight=20.0, decay=0.95, guided_steps=50, lpips_net="alex", decoder="vae",
                                      vae=taesd_vae(channels)).result[0]
    msd = VistaMultiScaleDiffusion.execute(levels=2, weight=10.0, guided_fraction=1.0,
                                           noise_level="faithful (paper)").result[0]
    for guidance, node in ((sync, "Vista SyncDiffusion"), (msd, "Vista Multi-Scale Diffusion")):
        with pytest.raises(ValueError, match=f"{node}: this model's network cannot be differentiated .*Flux"):
            sample(comfy, model, fusion_sampler(window, guidance), pos, neg, channels, 32, 32, steps=1)


def snapshot(*modules) -> list[torch.Tensor]:
    return [v.clone() for m in modules for v in m.state_dict().values()]


@pytest.mark.parametrize("name", FAMILIES)
def test_syncdiffusion(name):
    comfy = import_host()
    from vista.nodes.guidance import VistaSyncDiffusion

    model, pos, neg, channels, window = family(name)
    vae = taesd_vae(channels)
    before = snapshot(model.model, vae.first_stage_model)
    sync = VistaSyncDiffusion.execute(weight=20.0, decay=0.95, guided_steps=50, lpips_net="alex", decoder="vae",
                                      vae=vae).result[0]
    plain = sample(comfy, model, fusion_sampler(window), pos, neg, channels, 16, 32)
    guided = sample(comfy, model, fusion_sampler(window, sync), pos, neg, channels, 16, 32)
    change = (guided - plain).abs().max().item()
    print(f"\n{name}: SyncDiffusion moved the result by {change:.3g} (max |latent| {plain.abs().max().item():.3g})")
    assert torch.isfinite(guided).all() and change > 1e-4
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(model.model, vae.first_stage_model)))


@pytest.mark.parametrize("name", FAMILIES)
def test_multiscale(name):
    comfy = import_host()
    from vista.nodes.guidance import VistaMultiScaleDiffusion

    model, pos, neg, channels, window = family(name)
    before = snapshot(model.model)
    msd = VistaMultiScaleDiffusion.execute(levels=2, weight=200.0, guided_fraction=1.0,
                                           noise_level="faithful (paper)").result[0]
    plain = sample(comfy, model, fusion_sampler(window), pos, neg, channels, 32, 32)
    guided = sample(comfy, model, fusion_sampler(window, msd), pos, neg, channels, 32, 32)
    change = (guided - plain).abs().max().item()
    print(f"\n{name}: Multi-Scale Diffusion moved the result by {change:.3g}")
    assert torch.isfinite(guided).all() and change > 1e-4
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(model.model)))


def test_autograd_switch_restored():
    """The host's in_training flag (v0.33.0) is set only during a differentiable pass and restored, also on error."""
    import_host()
    import comfy.model_management
    from vista.nodes.differentiable import autograd_kernels

    if not hasattr(comfy.model_management, "in_training"):  # v0.3.64: plain torch ops, nothing to switch
        with autograd_kernels():
            assert not hasattr(comfy.model_management, "in_training")
        return
    assert comfy.model_management.in_training is False
    with pytest.raises(KeyError), autograd_kernels():
        assert comfy.model_management.in_training is True
        raise KeyError("boom")
    assert comfy.model_management.in_training is False
