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


class PaperStepCheck:
    """A VISTA_GUIDANCE around a real Vista one: at every guided window batch it lets the real guidance move the
    windows, then recomputes the papers' step itself, by autograd on the DDPM latent ``x_t = x / s`` (``s`` from the
    family's noise form, known to the test: sqrt(1 + sigma²) for eps/v, sqrt((1 − sigma)² + sigma²) for flow), with
    the guidance's own differentiable model/decoder callables, and records both steps (in ``x_t``).

    The sampler sees it as any guidance spec (``node``, ``min_align``, ``build(run)``)."""

    def __init__(self, spec, flow: bool):
        self.spec, self.node, self.min_align, self.flow, self.records = spec, spec.node, spec.min_align, flow, []

    def build(self, run):
        guidance, copies = self.spec.build(run)
        self.guidance = guidance
        return self, copies

    def begin_step(self, x, ctx):
        return self.guidance.begin_step(x, ctx)

    def guide(self, x_w, chunk, ctx, state):
        moved = self.guidance.guide(x_w, chunk, ctx, state)
        sigma = float(ctx.sigma)
        s = ((1 - sigma) ** 2 + sigma**2) ** 0.5 if self.flow else (1 + sigma**2) ** 0.5
        with torch.inference_mode(False), torch.enable_grad():
            x_t = (x_w.detach().clone().float() / s).requires_grad_(True)
            loss, weight = self.papers_loss(x_t, s, chunk, ctx, state)
            (grad,) = torch.autograd.grad(loss.sum(), x_t)
        self.records.append((sigma, ctx.opts.flow_matching, x_t.detach() - moved.float() / s, weight * grad))
        return moved

    def papers_loss(self, x_t, s, chunk, ctx, state):
        """The loss as a function of x_t and the per-row weight w_t (SyncDiffusion eq. 14 / MSD eq. 9)."""
        g, rows = self.guidance, x_t.shape[0]
        sigmas = ctx.sigma * x_t.new_ones(rows)
        if hasattr(state, "anchor_image"):  # SyncDiffusion: LPIPS of decoded x0 to the anchor's, anchor rows fixed
            anchor = ctx.opts.windows[g.anchor]
            anchors = state.anchor_image.repeat(len(chunk), 1, 1, 1)
            weight = torch.tensor([0.0 if w == anchor else state.weight for w in chunk]).repeat_interleave(rows // len(chunk))
            return g.distance(g.decode(g.denoise(s * x_t, sigmas)), anchors), weight.view(-1, 1, 1, 1)
        from vista.core.guidance.msd import downsample  # MSD: DDPM latents at t − 1 on both sides

        sigma, sigma_next = float(ctx.sigma), float(ctx.sigma_next)
        s_next = ((1 - sigma_next) ** 2 + sigma_next**2) ** 0.5 if self.flow else (1 + sigma_next**2) ** 0.5
        x = s * x_t
        d = g.denoise(x, sigmas)
        phi = d + (sigma_next / sigma) * (x - d)
        halves = [(w.y // 2, w.x // 2, w.h // 2, w.w // 2) for w in chunk]
        targets = torch.cat([state.target[..., y : y + h, x0 : x0 + w_] for y, x0, h, w_ in halves]).to(x_t)
        return (downsample(phi) / s_next - targets / s_next).square().flatten(1).mean(1), state.weight


@pytest.mark.parametrize("method", ("sync", "msd"))
@pytest.mark.parametrize("name", FAMILIES)
def test_guidance_step_is_the_papers(name, method):
    """[H] items 1 and 2: through the real sampler and the family's real network, every guided window batch moves
    by the papers' step on the DDPM latent x_t (eps: SDXL, v: SD2.x-v, flow: SD3): mapped to x_t, the moved
    latent equals x_t − w ∇_{x_t} L. Before the fix the step was 1/s² (eps/v) of it; the sampler's flow flag is
    checked against the family as well."""
    comfy = import_host()
    from vista.nodes.guidance import VistaMultiScaleDiffusion, VistaSyncDiffusion

    model, pos, neg, channels, window = family(name)
    flow = name == "sd3"
    if method == "sync":
        spec = VistaSyncDiffusion.execute(weight=20.0, decay=0.95, guided_steps=50, lpips_net="alex", decoder="vae",
                                          vae=taesd_vae(channels)).result[0]
        height, width = 16, 32
    else:
        spec = VistaMultiScaleDiffusion.execute(levels=2, weight=200.0, guided_fraction=1.0,
                                                noise_level="faithful (paper)").result[0]
        height, width = 32, 32
    check = PaperStepCheck(spec, flow)
    sample(comfy, model, fusion_sampler(window, check), pos, neg, channels, height, width, steps=3)
    assert len(check.records) >= 3
    for sigma, flag, step, papers in check.records:
        assert flag is flow
        ratio = (step * papers).sum().item() / papers.square().sum().item()
        print(f"{name} {method} sigma {sigma:.3f}: |step| {step.norm().item():.4g}, |paper's| {papers.norm().item():.4g}, "
              f"ratio {ratio:.4f}, max |diff| {(step - papers).abs().max().item():.3g}")
        assert papers.norm().item() > 0
        assert (step - papers).norm().item() <= 1e-2 * papers.norm().item()  # float32 through a real network


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
