"""Node tier: Vista on flow-matching DiT models (Flux, SD3) inside the real host (COMFYUI_PATH), no server.

Models: tiny random-weight DiTs that the host's own detection recognises (tests/support/host.py ``tiny_flux``,
``tiny_sd3``: Flux width 256 with one double and one single block; SD3 MMDiT depth 2, width 128). Every DiT test here
builds its CONDITIONING tensors directly (``dit_conditioning``: T5 context (B, L, 4096) + pooled (B, 768) + guidance for
Flux; T5 context + pooled (B, 2048) for SD3), because T5-XXL / CLIP-G are far too heavy for CPU CI; only
TestEulerAncestralOnConstSD15 (the SD1.5 test checkpoint made CONST) encodes prompts with its CLIP.

Sampling goes the way SamplerCustomAdvanced goes: a guider (CFGGuider; Flux at cfg 1, SD3 at cfg 4) + a SAMPLER +
``calculate_sigmas(model_sampling, "simple", steps)`` + RandomNoise's ``prepare_noise``; the latent has 16 channels.
"""
import json
import math
from pathlib import Path

import pytest
import torch

from host import dit_conditioning, encode, import_host, load_checkpoint, tiny_flux, tiny_sd3

FAMILIES = ("flux", "sd3")
CFG = {"flux": 1.0, "sd3": 4.0}
SEED = 7
WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "panorama_flux.json"


@pytest.fixture(scope="module")
def comfy():
    return import_host()


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, comfy):
    """(name, model, positive, negative) of one DiT family."""
    name = request.param
    model, _ = tiny_flux() if name == "flux" else tiny_sd3()
    return name, model, dit_conditioning(name, 1), dit_conditioning(name, 2)


def sample(comfy, model, sampler, positive, negative, cfg, height, width, steps=2, seed=SEED, noise_seed=None,
           callback=None, sigmas=None):
    """SamplerCustomAdvanced's path: CFGGuider.sample, RandomNoise, BasicScheduler("simple") sigmas, 16-channel latent."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    latent = torch.zeros(1, 16, height, width)
    if sigmas is None:
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).cpu()
    noise = comfy.sample.prepare_noise(latent, seed if noise_seed is None else noise_seed)
    return guider.sample(noise, latent, sampler, sigmas, callback=callback, disable_pbar=True, seed=seed)


def tiled(model, window=256, stride=128, wrap=False, mode="uniform", batch=4):
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    return VistaTiledDiffusion.execute(model, window_width=window, window_height=window, stride_x=stride, stride_y=stride,
                                       weight_mode=mode, wrap_x=wrap, window_batch_size=batch).result[0]


def fusion_sampler(**kw):
    from vista.nodes.latent_fusion import VistaLatentFusionSampler

    args = dict(window_width=256, window_height=256, stride_x=128, stride_y=128, weight_mode="guided", wrap_x=False,
                window_batch_size=4, eta=0.0, s_noise=1.0, variance_corrected=True)
    args.update(kw)
    return VistaLatentFusionSampler.execute(**args).result[0]


def relative(a, b):
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


class TestDetection:
    def test_flux_is_detected(self, comfy):
        """The host builds model_base.Flux with the Flux (dev, guidance) config and CONST sampling at width 256; on
        v0.33.0 the width is read from the weights by the host's loader (detected=True)."""
        import comfyui_version
        import comfy.model_base
        import comfy.model_sampling

        model, detected = tiny_flux()
        net = model.get_model_object("diffusion_model")
        assert type(model.model) is comfy.model_base.Flux and type(model.model.model_config).__name__ == "Flux"
        assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)
        assert (net.hidden_size, net.num_heads, len(net.double_blocks), len(net.single_blocks)) == (256, 2, 1, 1)
        assert model.get_model_object("latent_format").latent_channels == 16 and net.patch_size == 2
        assert detected == (comfyui_version.__version__ != "0.3.64"), comfyui_version.__version__

    def test_sd3_is_detected(self, comfy):
        """SD3 detection reads depth and width from the weights on both hosts (comfy.sd.load_diffusion_model_state_dict)."""
        import comfy.model_base
        import comfy.model_sampling

        model, detected = tiny_sd3()
        net = model.get_model_object("diffusion_model")
        assert detected and type(model.model) is comfy.model_base.SD3
        assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)
        assert (len(net.joint_blocks), net.hidden_size, net.patch_size) == (2, 128, 2)


class TestTiledDiffusion:
    def test_window_equals_canvas_is_unpatched(self, comfy, family):
        """One window covering the 256x256 px canvas = the unpatched model, euler (tolerance 1e-5 x max |latent|)."""
        name, model, pos, neg = family
        euler = comfy.samplers.sampler_object("euler")
        plain = sample(comfy, model, euler, pos, neg, CFG[name], 32, 32)
        patched = sample(comfy, tiled(model), euler, pos, neg, CFG[name], 32, 32)
        assert relative(patched, plain) <= 1e-5

    @pytest.mark.parametrize("wrap, windows", [(False, 3), (True, 4)])
    def test_panorama_runs(self, comfy, family, wrap, windows):
        """A 256x512 px panorama of 256 px windows at stride 128 runs and is finite; the DiT sees only 32x32 latent
        windows (each one a standalone image, positions from 0), 3 per model call (wrap: 4), in batches of 2.
        Shapes recorded by a DIFFUSION_MODEL wrapper (SD3 at cfg 4 also runs the negative: twice the batch)."""
        import comfy.patcher_extension

        name, model, pos, neg = family
        seen = []

        def record(executor, x, *args, **kwargs):
            seen.append(tuple(x.shape))
            return executor(x, *args, **kwargs)

        patched = tiled(model, wrap=wrap, batch=2).clone()
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "vista_test_shapes", record)
        out = sample(comfy, patched, comfy.samplers.sampler_object("euler"), pos, neg, CFG[name], 32, 64, steps=1)
        assert out.shape == (1, 16, 32, 64) and torch.isfinite(out).all()
        conds = 1 if CFG[name] == 1 else 2
        assert {shape[1:] for shape in seen} == {(16, 32, 32)}
        assert sum(shape[0] for shape in seen) == windows * conds and max(shape[0] for shape in seen) <= 2 * conds

    def test_window_not_on_patch_grid(self, comfy, family):
        """DiT windows must be whole 2x2-latent patches (16 px): 264 px is a multiple of 8 but not of 16."""
        _, model, *_ = family
        with pytest.raises(ValueError, match=r"^Vista Tiled Diffusion: window_width=264 px must be a multiple of 16 px"):
            tiled(model, window=264)


class TestLatentFusionSampler:
    def test_eta0_window_equals_canvas_is_euler(self, comfy, family):
        name, model, pos, neg = family
        fused = sample(comfy, model, fusion_sampler(), pos, neg, CFG[name], 32, 32)
        euler = sample(comfy, model, comfy.samplers.sampler_object("euler"), pos, neg, CFG[name], 32, 32)
        assert relative(fused, euler) <= 1e-5

    def test_eta1_window_equals_canvas_is_host_euler_ancestral(self, comfy, family):
        """eta 1, one window = the host's euler_ancestral (its RF form on CONST models) with the same noise draws.

        Tolerance 1e-5 x max |latent| (float32; Vista fuses in float32 and takes the same operations)."""
        name, model, pos, neg = family
        fused = sample(comfy, model, fusion_sampler(eta=1.0), pos, neg, CFG[name], 32, 32, steps=3)
        host = sample(comfy, model, rf_sampler_with_vista_noise(comfy, SEED, (1, 16, 32, 32)), pos, neg, CFG[name], 32, 32, steps=3)
        print(f"\n[{name}] Vista eta 1 vs host euler_ancestral: max rel diff {relative(fused, host):.2e}")
        assert relative(fused, host) <= 1e-5

    @pytest.mark.parametrize("variance_corrected", [True, False])
    def test_panorama_eta1_runs(self, comfy, family, variance_corrected):
        name, model, pos, neg = family
        sampler = fusion_sampler(eta=1.0, variance_corrected=variance_corrected, wrap_x=True, window_batch_size=2)
        out = sample(comfy, model, sampler, pos, neg, CFG[name], 32, 48)
        assert out.shape == (1, 16, 32, 48) and torch.isfinite(out).all()

    def test_step_noise_variance(self, comfy, family):
        """Issue [M] (statistical): the fused noise of a stochastic flow step has variance renoise^2 with VCF, and
        renoise^2 / 2 where two uniform windows overlap without it.

        Two windows of 32 latent px at stride 16 on a 32x48 canvas (overlap = columns 16..31). Two runs from the SAME
        initial noise with different step seeds: after the first step their difference is exactly the fused step
        noise times sqrt(2) (the prediction cancels). It is read in the sampler's own space through the callback of
        the next step. Tolerance 0.1 on the variance ratio (16 channels x 32 rows x 16 columns = 8192 values per
        region, standard error sqrt(2/8192) = 1.6 %). The SD-form step (the code before this change) gives
        sigma_up^2 / renoise^2 instead, printed."""
        from vista.core.sampling.flow_matching import rf_step, ve_step

        name, model, pos, neg = family
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4).cpu()[:3]
        step = rf_step(float(sigmas[0]), float(sigmas[1]), 1.0)
        overlap, alone = slice(16, 32), [*range(0, 16), *range(32, 48)]
        ratios = {}
        for vcf in (True, False):
            sampler = fusion_sampler(weight_mode="uniform", eta=1.0, variance_corrected=vcf)
            runs = [after_first_step(comfy, model, sampler, pos, neg, CFG[name], sigmas, seed) for seed in (0, 1)]
            diff = (runs[1] - runs[0]) / math.sqrt(2) / step.noise
            ratios[vcf] = (diff[..., overlap].var().item(), diff[..., alone].var().item())
        sd = ve_step(float(sigmas[0]), float(sigmas[1]), 1.0).noise ** 2 / step.noise**2
        print(f"\n[{name}] step {float(sigmas[0]):.3f} -> {float(sigmas[1]):.3f}: fused step-noise variance / renoise^2 "
              f"(overlap, alone): VCF {ratios[True]}, plain {ratios[False]}; SD-form step would give {sd:.3f}")
        assert all(abs(r - 1) < 0.1 for r in ratios[True])
        assert abs(ratios[False][0] - 0.5) < 0.1 and abs(ratios[False][1] - 1) < 0.1

    def test_window_not_on_patch_grid(self, comfy, family):
        name, model, pos, neg = family
        with pytest.raises(ValueError, match=r"^Vista Latent Fusion Sampler: window_height=200 px must be a multiple of 16"):
            sample(comfy, model, fusion_sampler(window_height=200), pos, neg, CFG[name], 32, 32, steps=1)


def after_first_step(comfy, model, sampler, pos, neg, cfg, sigmas, seed):
    """The sampler's x after its first step (sampler space: before inverse noise scaling / process_latent_out)."""
    seen = {}
    sample(comfy, model, sampler, pos, neg, cfg, 32, 48, seed=seed, noise_seed=SEED, sigmas=sigmas,
           callback=lambda i, denoised, x, total: seen.setdefault(i, x.clone()))
    return seen[1]


def rf_sampler_with_vista_noise(comfy, seed, shape):
    """The host's own ``euler_ancestral`` SAMPLER (``comfy.samplers.ksampler``, what ``sampler_object`` returns), whose
    noise_sampler draws ``shape`` normals from Vista's step stream for ``seed`` (CPU): the draws Vista's one-window
    sampler makes, so both add the same noise."""
    from vista.core.sampling.noise_streams import step_generator

    generator = step_generator(seed)
    return comfy.samplers.ksampler("euler_ancestral", {"noise_sampler": lambda sigma, sigma_next: torch.randn(shape, generator=generator)})


@pytest.fixture(scope="module")
def flow_sd15(comfy):
    """The SD1.5 test checkpoint made CONST by the host's own ModelSamplingSD3 node (shift 3), and its prompts."""
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    model, clip, _ = load_checkpoint()
    return ModelSamplingSD3().patch(model, 3.0)[0], encode(clip, "a panorama of mountains"), encode(clip, "")


class TestEulerAncestralOnConstSD15:
    """The brief's host check on a CONST model that is not a DiT: the SD1.5 test checkpoint through the host's own
    ModelSamplingSD3 node (shift 3) — ComfyUI's euler_ancestral runs its RF form there too (both versions)."""

    def run(self, comfy, model, sampler, pos, neg):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(pos, neg)
        guider.set_cfg(5.0)
        latent = torch.zeros(1, 4, 16, 16)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 2).cpu()
        noise = comfy.sample.prepare_noise(latent, SEED)
        return guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=SEED)

    def test_eta1_one_window_equals_host(self, comfy, flow_sd15):
        model, pos, neg = flow_sd15
        fused = self.run(comfy, model, fusion_sampler(eta=1.0, window_width=128, window_height=128), pos, neg)
        host = self.run(comfy, model, rf_sampler_with_vista_noise(comfy, SEED, (1, 4, 16, 16)), pos, neg)
        print(f"\nSD1.5 + ModelSamplingSD3, eta 1: max rel diff {relative(fused, host):.2e}")
        assert relative(fused, host) <= 1e-5

    def test_noise_scale_like_the_host(self, comfy, flow_sd15):
        """v0.33.0 multiplies the RF step noise by model_sampling.noise_scale (the host's ModelNoiseScale node): so does
        Vista. v0.3.64 has neither: there the host's RF step has no such factor, and Vista uses 1."""
        from vista.nodes._common import step_form

        model, pos, neg = flow_sd15
        try:
            from comfy_extras.nodes_model_advanced import ModelNoiseScale
        except ImportError:  # v0.3.64
            assert not hasattr(model.get_model_object("model_sampling"), "noise_scale")
            assert step_form(model) == {"flow_matching": True, "noise_scale": 1.0}
            return
        scaled = ModelNoiseScale().patch(model, 2.0)[0]
        fused = self.run(comfy, scaled, fusion_sampler(eta=1.0, window_width=128, window_height=128), pos, neg)
        host = self.run(comfy, scaled, rf_sampler_with_vista_noise(comfy, SEED, (1, 4, 16, 16)), pos, neg)
        plain = self.run(comfy, model, fusion_sampler(eta=1.0, window_width=128, window_height=128), pos, neg)
        assert relative(fused, host) <= 1e-5 and relative(fused, plain) > 1e-3


class TestZoomStackSampler:
    """The zoom stack sampler on Flux (16 channels, CONST): RF steps with zoom-consistent noise."""

    def zoom_sample(self, comfy, model, pos, neg, levels, eta, noise=None, sampler=None, steps=2):
        from vista.core.zoom.stack import ZoomSettings
        from vista.nodes.zoom_sampling import ZoomNoise, ZoomStackSampler

        settings = ZoomSettings(2, levels)
        latent = torch.zeros(levels, 16, 32, 32)
        if noise is None:
            noise = ZoomNoise(SEED, settings).generate_noise({"samples": latent})
        sampler = sampler or ZoomStackSampler(settings, eta, 1.0, None, {})
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(pos, neg)
        guider.set_cfg(1.0)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).cpu()
        return guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=SEED)

    def test_one_level_is_host_euler_ancestral(self, comfy):
        """One level (nothing to blend or paste): the zoom sampler at eta 1 = the host's euler_ancestral (RF) with the
        same noise draws (tolerance 1e-5 x max |latent|)."""
        model, _ = tiny_flux()
        pos, neg = dit_conditioning("flux", 1), dit_conditioning("flux", 2)
        noise = comfy.sample.prepare_noise(torch.zeros(1, 16, 32, 32), SEED)
        zoom = self.zoom_sample(comfy, model, pos, neg, 1, 1.0, noise=noise)
        host = self.zoom_sample(comfy, model, pos, neg, 1, 1.0, noise=noise, sampler=rf_sampler_with_vista_noise(comfy, SEED, (1, 16, 32, 32)))
        assert relative(zoom, host) <= 1e-5

    def test_stack_runs(self, comfy):
        model, _ = tiny_flux()
        prompts = dit_conditioning("flux", 3, batch=2)
        out = self.zoom_sample(comfy, model, prompts, prompts, 2, 1.0)
        assert out.shape == (2, 16, 32, 32) and torch.isfinite(out).all()


class TestStyleAlignment:
    """Vista Style Alignment with a Flux model: 16-channel latents, tiles in Flux's 8 px latent factor."""

    def test_noise_on_16_channels(self, comfy):
        from vista.nodes.style_alignment import VistaStyleAlignment

        model, _ = tiny_flux()
        latent = {"samples": torch.zeros(1, 16, 32, 64)}
        node = lambda alpha: VistaStyleAlignment.execute(model, noise_seed=11, window_width=256, window_height=256,
                                                         alpha=alpha, reference="seeded").result[0]
        assert torch.equal(node(0.0).generate_noise(latent), comfy.sample.prepare_noise(latent["samples"], 11))
        aligned = node(1.0).generate_noise(latent)
        assert aligned.shape == (1, 16, 32, 64) and torch.equal(aligned[..., :32], aligned[..., 32:])
        assert abs(node(0.4).generate_noise(latent).std().item() - 1) < 0.05  # slerp keeps unit variance

    def test_panorama_with_style_aligned_noise(self, comfy):
        from vista.nodes.style_alignment import VistaStyleAlignment

        model, _ = tiny_flux()
        pos, neg = dit_conditioning("flux", 1), dit_conditioning("flux", 2)
        latent = torch.zeros(1, 16, 32, 64)
        noise = VistaStyleAlignment.execute(model, noise_seed=11, window_width=256, window_height=256, alpha=0.4,
                                            reference="seeded").result[0].generate_noise({"samples": latent})
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(pos, neg)
        guider.set_cfg(1.0)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 2).cpu()
        out = guider.sample(noise, latent, fusion_sampler(eta=1.0), sigmas, disable_pbar=True, seed=11)
        assert out.shape == (1, 16, 32, 64) and torch.isfinite(out).all()


class TestMADOnDiT:
    def test_refused(self, family):
        """MAD's UNet attention patches do not reach DiT joint attention: the node refuses DiT models, saying so."""
        from vista.nodes.mad import VistaMADAttention

        _, model, *_ = family
        with pytest.raises(ValueError, match=r"^Vista MAD Attention: DiT models are not supported"):
            VistaMADAttention.execute(model, tau=0.3, input_blocks=True, middle_block=True, output_blocks=True)


def budget_need(model, windows_per_call: int, window_hw) -> int:
    """Bytes the canvas budget counts for one model call of ``windows_per_call`` windows of a DiT (Vista's
    nodes/budget.py: the host's own ``memory_required`` per window, in the model's compute dtype)."""
    from vista.nodes.budget import compute_dtype, window_bytes

    return windows_per_call * window_bytes(model, None, window_hw, compute_dtype(model))


class TestWorkflow:
    """workflows/panorama_flux.json in the node tier: its sampling chain with the workflow's own widget values on the
    tiny Flux, CONDITIONING built directly (the workflow's CLIPTextEncode needs T5-XXL), 1 step instead of the
    workflow's (speed only), decoding skipped (Flux's VAE is not part of the tiny model).

    Every pixel size (canvas, window, stride, ModelSamplingFlux's width/height) is divided by ``SCALE``, so the plan
    keeps the workflow's shape (3 windows at half-window stride, window_batch_size 2: a call of 2 windows and one of 1
    per step; the shift computed for the window) while the test stops depending on the machine's free memory (issue
    [H] 12): the canvas budget counts a DiT window with the host's own ``memory_required``, a per-family figure that
    does not shrink with the tiny model (at full size, 2 windows of 1024 px: 14.9 GB on a CPU, refused where less was
    free; at 1/8: 0.23 GB)."""

    SCALE = 8

    def widgets(self):
        ui = json.loads(WORKFLOW.read_text())
        return {node["type"]: node.get("widgets_values", []) for node in ui["nodes"]}

    def test_sampling_chain_runs(self, comfy):
        from comfy_extras.nodes_custom_sampler import Guider_Basic
        from comfy_extras.nodes_model_advanced import ModelSamplingFlux
        from vista.nodes.tiled_diffusion import VistaTiledDiffusion

        w = self.widgets()
        width, height, batch = w["EmptySD3LatentImage"]
        max_shift, base_shift, shift_w, shift_h = w["ModelSamplingFlux"]
        window_w, window_h, stride_x, stride_y, mode, wrap, window_batch = w["VistaTiledDiffusion"]
        seed, sampler_name, scheduler = w["RandomNoise"][0], w["KSamplerSelect"][0], w["BasicScheduler"][0]
        assert (window_w, window_h) == (1024, 1024) and (shift_w, shift_h) == (window_w, window_h)
        sizes = (width, height, window_w, window_h, stride_x, stride_y)
        assert all(px % (16 * self.SCALE) == 0 for px in sizes)  # scaled, they stay on Flux's 16 px patch grid
        width, height, window_w, window_h, stride_x, stride_y = (px // self.SCALE for px in sizes)
        model, _ = tiny_flux()
        model = ModelSamplingFlux().patch(model, max_shift, base_shift, window_w, window_h)[0]
        assert budget_need(model, window_batch, (window_h // 8, window_w // 8)) < 2**30  # the run does not hinge on free RAM
        calls = []

        def record(apply_model, args):
            calls.append(tuple(args["input"].shape))
            return apply_model(args["input"], args["timestep"], **args["c"])

        model.set_model_unet_function_wrapper(record)  # under Vista's wrapper: sees the window batches
        model = VistaTiledDiffusion.execute(model, window_width=window_w, window_height=window_h, stride_x=stride_x,
                                            stride_y=stride_y, weight_mode=mode, wrap_x=wrap,
                                            window_batch_size=window_batch).result[0]
        guider = Guider_Basic(model)
        guider.set_conds(dit_conditioning("flux", 1, guidance=w["FluxGuidance"][0]))
        latent = torch.zeros(batch, 16, height // 8, width // 8)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, 1).cpu()
        noise = comfy.sample.prepare_noise(latent, seed)
        out = guider.sample(noise, latent, comfy.samplers.sampler_object(sampler_name), sigmas, disable_pbar=True, seed=seed)
        assert out.shape == latent.shape and torch.isfinite(out).all()
        window = (16, window_h // 8, window_w // 8)
        assert calls == [(2 * batch, *window), (batch, *window)]  # the workflow's plan: 3 windows, 2 per call
