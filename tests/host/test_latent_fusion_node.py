"""Node tier: Vista Latent Fusion Sampler inside the real host (COMFYUI_PATH), no server.

Sampling goes the way SamplerCustomAdvanced goes: ``CFGGuider`` + the node's SAMPLER +
``calculate_sigmas(..., "normal", steps)`` + RandomNoise's ``prepare_noise``.
"""
import pytest
import torch

from host import encode, import_host, load_checkpoint

CFG, SEED = 5.0, 7


@pytest.fixture(scope="module")
def host():
    comfy = import_host()
    from vista.nodes.latent_fusion import VistaLatentFusionSampler
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    model, clip, _ = load_checkpoint()
    return comfy, VistaLatentFusionSampler, VistaTiledDiffusion, model, encode(clip, "a panorama of mountains"), encode(clip, "")


def fusion_sampler(node, **kw):
    args = dict(window_width=256, window_height=256, stride_x=128, stride_y=128, weight_mode="guided", wrap_x=False,
                window_batch_size=4, eta=0.0, s_noise=1.0, variance_corrected=True)
    args.update(kw)
    return node.execute(**args).result[0]


def sample_custom(comfy, model, sampler, positive, negative, height, width, steps=2, seed=SEED, denoise_mask=None,
                  stop_after=None, noise_seed=None):
    """SamplerCustomAdvanced's path: CFGGuider.sample with RandomNoise and BasicScheduler(normal) sigmas.

    ``stop_after`` keeps only the first steps of the schedule (like SplitSigmas), so the run ends at a sigma > 0;
    ``noise_seed`` (default ``seed``) seeds the initial noise, ``seed`` the sampler (its per-window step noise).
    """
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(CFG)
    latent = torch.zeros(1, 4, height, width)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
    sigmas = sigmas if stop_after is None else sigmas[: stop_after + 1]
    noise = comfy.sample.prepare_noise(latent, seed if noise_seed is None else noise_seed)
    return guider.sample(noise, latent, sampler, sigmas, denoise_mask=denoise_mask, disable_pbar=True, seed=seed)


def laplacian_energy(latent, columns):
    """Mean squared 5-point Laplacian of ``latent (B, C, H, W)`` over interior rows and the given columns."""
    lap = (latent[..., 1:-1, 1:-1] * -4 + latent[..., :-2, 1:-1] + latent[..., 2:, 1:-1]
           + latent[..., 1:-1, :-2] + latent[..., 1:-1, 2:])
    return lap[..., [c - 1 for c in columns]].pow(2).mean().item()


class TestLatentFusionSampler:
    @pytest.mark.parametrize("weight_mode", ["uniform", "guided"])
    def test_eta0_equals_tiled_diffusion_euler(self, host, weight_mode):
        """eta 0 latent fusion = Vista Tiled Diffusion + stock euler, same seed and windows.

        Tolerance: max abs diff <= 1e-5 x max |latent| (float32 rounding; the random-weight test
        model's latents reach ~1e2, so this is ~1e-3 absolute, measured ~3e-4)."""
        comfy, node, tiled, model, pos, neg = host
        sampler = fusion_sampler(node, weight_mode=weight_mode)
        fused = sample_custom(comfy, model, sampler, pos, neg, 32, 48)
        patched = tiled.execute(model, window_width=256, window_height=256, stride_x=128, stride_y=128,
                                weight_mode=weight_mode, wrap_x=False, window_batch_size=4).result[0]
        euler = sample_custom(comfy, patched, comfy.samplers.sampler_object("euler"), pos, neg, 32, 48)
        print(f"\n[{weight_mode}] latent fusion (eta 0) vs tiled+euler: max abs diff {(fused - euler).abs().max().item():.2e}")
        assert fused.shape == (1, 4, 32, 48)
        assert (fused - euler).abs().max().item() <= 1e-5 * euler.abs().max().item()

    @pytest.mark.parametrize("variance_corrected", [True, False])
    def test_eta1_runs(self, host, variance_corrected):
        comfy, node, _, model, pos, neg = host
        sampler = fusion_sampler(node, eta=1.0, variance_corrected=variance_corrected, wrap_x=True, window_batch_size=2)
        out = sample_custom(comfy, model, sampler, pos, neg, 32, 48)
        assert out.shape == (1, 4, 32, 48) and torch.isfinite(out).all()

    def test_same_seed_same_output(self, host):
        comfy, node, _, model, pos, neg = host
        sampler = fusion_sampler(node, eta=1.0)
        a, b = (sample_custom(comfy, model, sampler, pos, neg, 32, 48) for _ in range(2))
        assert torch.equal(a, b)

    def test_vcf_keeps_high_frequencies_in_overlaps(self, host):
        """Issue verification 2: high-frequency energy (mean squared Laplacian) of the final latent's stochastic
        part, overlap ÷ non-overlap columns, without and with VCF (eta 1, uniform weights).

        Setup: two windows of 32 latent px at stride 16 on a 32x48 canvas (overlap = columns 16..31); the run is
        the first step of a 4-step normal schedule (as after SplitSigmas), so it ends on a stochastic fused step
        at sigma > 0. The random-weight test model's own prediction has large, window-dependent high frequencies
        that would swamp the statistic, so each run is compared with a run from the SAME initial noise and a
        different step-noise seed: the difference is exactly the fused step noise (the prediction cancels).
        Step seeds 1..3 against 0. Plain averaging of two windows halves that noise's energy in the overlap
        (ratio ~0.5); VCF keeps it (~1). The raw final-latent ratios are printed too.
        """
        comfy, node, _, model, pos, neg = host
        overlap, alone = list(range(18, 30)), list(range(1, 14)) + list(range(34, 47))
        ratio = lambda t: laplacian_energy(t, overlap) / laplacian_energy(t, alone)
        ratios = {}
        for vcf in (False, True):
            sampler = fusion_sampler(node, weight_mode="uniform", eta=1.0, variance_corrected=vcf)
            runs = [sample_custom(comfy, model, sampler, pos, neg, 32, 48, steps=4, seed=s, noise_seed=SEED, stop_after=1)
                    for s in (0, 1, 2, 3)]
            per_seed = [ratio(run - runs[0]) for run in runs[1:]]
            ratios[vcf] = sum(per_seed) / len(per_seed)
            print(f"\nvariance_corrected={vcf}: HF energy overlap/non-overlap of the step noise, seeds 1..3: "
                  f"{[round(r, 3) for r in per_seed]}, mean {ratios[vcf]:.3f}; raw final latents: "
                  f"{[round(ratio(run), 3) for run in runs]}")
        assert abs(ratios[True] - 1) < abs(ratios[False] - 1)
        assert abs(ratios[True] - 1) < 0.2 and abs(ratios[False] - 0.5) < 0.2

    def test_with_mad_attention(self, host):
        """A Vista MAD patch on the model gets the window layout: all windows in one call, merged attention changes the result."""
        comfy, node, _, model, pos, neg = host
        from vista.nodes.mad import VistaMADAttention

        mad = VistaMADAttention.execute(model, tau=1.0, input_blocks=True, middle_block=True, output_blocks=True).result[0]
        sampler = fusion_sampler(node, window_batch_size=1)
        plain, merged = (sample_custom(comfy, m, sampler, pos, neg, 32, 48, steps=1) for m in (model, mad))
        assert torch.isfinite(merged).all() and (merged - plain).abs().max().item() > 1e-3

    def test_window_larger_than_canvas_is_clamped_with_warning(self, host, caplog):
        """A window wider than the canvas is clamped to it with a warning naming the input (shared WindowSpec rule);
        one window covering the canvas at eta 0 is then the stock euler sampler (max abs diff <= 1e-5 x max |latent|)."""
        comfy, node, _, model, pos, neg = host
        plain = sample_custom(comfy, model, comfy.samplers.sampler_object("euler"), pos, neg, 32, 16, steps=1)
        with caplog.at_level("WARNING"):
            fused = sample_custom(comfy, model, fusion_sampler(node, window_width=512), pos, neg, 32, 16, steps=1)
        assert "window_width=512 px is larger than the image/area width 128 px" in caplog.text
        assert (fused - plain).abs().max().item() <= 1e-5 * plain.abs().max().item()

    def test_size_not_multiple_of_factor(self, host):
        comfy, node, _, model, pos, neg = host
        with pytest.raises(ValueError, match="stride_x=100 px must be a positive multiple of 8"):
            sample_custom(comfy, model, fusion_sampler(node, stride_x=100), pos, neg, 32, 32, steps=1)

    def test_validate_inputs(self, host):
        _, node, *_ = host
        assert "stride_x=600 px must be at most window_width=512 px" in node.validate_inputs(512, 512, 600, 128)
        assert node.validate_inputs(512, 512, 128, 128) is True


class TestRejections:
    """Conditioning that latent fusion cannot crop per window is refused, pointing to Vista Tiled Diffusion."""

    def test_denoise_mask(self, host):
        comfy, node, _, model, pos, neg = host
        mask = torch.ones(1, 1, 32, 32)
        with pytest.raises(ValueError, match="noise_mask.*Vista Tiled Diffusion"):
            sample_custom(comfy, model, fusion_sampler(node), pos, neg, 32, 32, steps=1, denoise_mask=mask)

    @pytest.mark.parametrize("values, match", [
        ({"area": (16, 16, 0, 0), "strength": 1.0, "set_area_to_bounds": False}, "area conditioning"),
        ({"mask": torch.ones(1, 32, 32), "set_area_to_bounds": False, "mask_strength": 1.0}, "mask conditioning"),
        ({"noise_concat": torch.zeros(1, 4, 32, 32)}, "c_concat"),
    ])
    def test_spatial_conditioning(self, host, values, match):
        comfy, node, _, model, pos, neg = host
        import node_helpers

        cond = node_helpers.conditioning_set_values(pos, values)
        with pytest.raises(ValueError, match=f"{match}.*Vista Tiled Diffusion"):
            sample_custom(comfy, model, fusion_sampler(node), cond, neg, 32, 32, steps=1)

    def test_controlnet_cond(self, host):
        """A processed cond dict with a ControlNet (key "control"), checked on a real guider's public ``conds``."""
        comfy, *_ , model, pos, neg = host
        from vista.nodes.latent_fusion import reject_unsupported

        guider = comfy.samplers.CFGGuider(model)
        guider.conds = {"positive": [{"control": object(), "model_conds": {}}], "negative": []}
        with pytest.raises(ValueError, match="ControlNet.*Vista Tiled Diffusion"):
            reject_unsupported(guider, None)


def two_prompts(comfy, clip_texts=("a red desert", "a snowy forest")):
    from host import encode, load_checkpoint

    _, clip, _ = load_checkpoint()
    prompts = [encode(clip, t) for t in clip_texts]
    both = [[torch.cat([p[0][0] for p in prompts]), {"pooled_output": torch.cat([p[0][1]["pooled_output"] for p in prompts])}]]
    return prompts, both


def guided_sample(comfy, model, sampler, positive, negative, noise, steps=2, seed=SEED):
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(CFG)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
    return guider.sample(noise, torch.zeros_like(noise), sampler, sigmas, disable_pbar=True, seed=seed)


def mad_model(model, tau):
    from vista.nodes.mad import VistaMADAttention

    return VistaMADAttention.execute(model, tau=tau, input_blocks=True, middle_block=True, output_blocks=True).result[0]


class TestBatchOrder:
    """Issue [R] 8: ComfyUI repeats a CONDITIONING of batch B to a larger batch by tiling it (c0, c1, c0, …);
    the window batches are window-major so every window of sample b meets prompt b, with and without MAD."""

    @pytest.mark.parametrize("tau", [0.0, 1.0])
    def test_two_prompts_reach_their_own_samples(self, host, tau):
        comfy, node, _, model, pos, neg = host
        prompts, both = two_prompts(comfy)
        m = mad_model(model, tau) if tau else model
        sampler = fusion_sampler(node, window_batch_size=2)
        noise = comfy.sample.prepare_noise(torch.zeros(2, 4, 32, 48), 9)
        batch = guided_sample(comfy, m, sampler, both, neg, noise)
        for b in range(2):
            single = guided_sample(comfy, m, sampler, prompts[b], neg, noise[b : b + 1])
            assert (batch[b : b + 1] - single).abs().max().item() <= 1e-4 * single.abs().max().item(), (tau, b)


class TestMADPerStep:
    def test_all_windows_in_one_call_only_while_mad_is_active(self, host):
        """Issue [R] 7: MAD active for the first round(tau x steps) steps (all windows per call), then the user's
        window_batch_size again. UNet batch sizes recorded by a DIFFUSION_MODEL wrapper (cond + uncond = 2x)."""
        comfy, node, _, model, pos, neg = host
        import comfy.patcher_extension

        m = mad_model(model, 0.5).clone()
        batches = []

        def record(executor, x, *args, **kwargs):
            batches.append(x.shape[0])
            return executor(x, *args, **kwargs)

        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "vista_test_batches", record)
        sampler = fusion_sampler(node, window_batch_size=1)  # 32x48 latent, window 32, stride 16: 2 windows
        sample_custom(comfy, m, sampler, pos, neg, 32, 48, steps=4)
        assert batches == [4, 4] + [2, 2] * 2  # steps 0-1: one call of 2 windows; steps 2-3: two calls of 1


@pytest.fixture(scope="module")
def flow_model(host):
    """The test checkpoint sampled by flow matching, through the host's own ModelSamplingSD3 node."""
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    comfy, *_, model, pos, neg = host
    return ModelSamplingSD3().patch(model, 3.0)[0]


class TestFlowMatching:
    """Flow-matching models (CONST sampling; via the host's own ModelSamplingSD3 node here)."""

    def test_stochastic_step_runs(self, host, flow_model):
        """Issue [M]: eta > 0 on a flow model takes ComfyUI's RF ancestral step (equal to the host's euler_ancestral:
        tests/host/test_flux_sd3_nodes.py), with VCF over a 2-window panorama."""
        comfy, node, _, model, pos, neg = host
        out = sample_custom(comfy, flow_model, fusion_sampler(node, eta=1.0), pos, neg, 32, 48, steps=2)
        assert out.shape == (1, 4, 32, 48) and torch.isfinite(out).all()

    def test_deterministic_step_equals_stock_euler(self, host, flow_model):
        """eta 0 is exact for flow models: one window covering the canvas = ComfyUI's euler on the same model."""
        comfy, node, _, model, pos, neg = host
        fused = sample_custom(comfy, flow_model, fusion_sampler(node, window_width=256, window_height=256), pos, neg, 32, 32)
        euler = sample_custom(comfy, flow_model, comfy.samplers.sampler_object("euler"), pos, neg, 32, 32)
        assert torch.isfinite(fused).all()
        assert (fused - euler).abs().max().item() <= 1e-5 * max(1.0, euler.abs().max().item())


class TestStepNoise:
    def test_step_noise_independent_of_initial_noise(self, host):
        """Issue [R] 9 in the host: with the model's prediction cancelled (same initial noise, two step seeds),
        the first step's noise is not the initial noise RandomNoise drew from the same seed."""
        comfy, node, _, model, pos, neg = host
        sampler = fusion_sampler(node, weight_mode="uniform", eta=1.0, window_width=256, window_height=256)
        noise = comfy.sample.prepare_noise(torch.zeros(1, 4, 32, 32), SEED)
        a = sample_custom(comfy, model, sampler, pos, neg, 32, 32, steps=4, seed=SEED, noise_seed=SEED, stop_after=1)
        b = sample_custom(comfy, model, sampler, pos, neg, 32, 32, steps=4, seed=SEED + 100, noise_seed=SEED, stop_after=1)
        step_noise_difference = (a - b).flatten()
        r = torch.corrcoef(torch.stack([step_noise_difference, noise.flatten()]))[0, 1].item()
        assert abs(r) < 5 / noise.numel() ** 0.5, r


class TestProgress:
    def test_progress_per_window_batch(self, host):
        """Issue [F] 3: 3 windows in batches of 1, 2 steps: reports before batches 2 and 3 of each step, on the
        sampler's scale (total 2 steps x 3 batches)."""
        comfy, node, tiled_node, model, pos, neg = host
        reports = []
        comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: reports.append((value, total)))
        try:
            sample_custom(comfy, model, fusion_sampler(node, window_batch_size=1), pos, neg, 32, 64)
        finally:
            comfy.utils.set_progress_bar_global_hook(None)
        assert reports == [(1, 6), (2, 6), (4, 6), (5, 6)]

    def test_progress_inside_mad_merged_step(self, host):
        """Issue [H] 10: MAD tau 0.5 of 2 steps merges all 3 windows in one call at step 0; the bar moves per UNet
        block of that call (the test UNet has 4 input + 4 output blocks = 8 units: after each input block, before
        each output block, the step's end left to the sampler), then per window batch at step 1 (3 batches of 1)."""
        comfy, node, _, model, pos, neg = host
        unet = model.get_model_object("diffusion_model")
        assert (len(unet.input_blocks), len(unet.output_blocks)) == (4, 4)
        reports = []
        comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: reports.append((value, total)))
        try:
            sample_custom(comfy, mad_model(model, 0.5), fusion_sampler(node, window_batch_size=1), pos, neg, 32, 64)
        finally:
            comfy.utils.set_progress_bar_global_hook(None)
        assert reports == [(1, 16), (2, 16), (3, 16), (4, 16), (5, 16), (6, 16), (7, 16), (4, 6), (5, 6)]


class TestCanvasBudget:
    def test_huge_mad_canvas_refused_before_sampling(self, host):
        """Issue [F] 2 on the latent route: 16384² px with MAD is refused with the estimate before any model call."""
        comfy, node, _, model, pos, neg = host
        calls = []
        watched = mad_model(model, 0.3)
        watched.set_model_unet_function_wrapper(lambda apply_model, args: calls.append(1) or apply_model(
            args["input"], args["timestep"], **args["c"]))
        sampler = fusion_sampler(node, window_width=512, window_height=512)
        with pytest.raises(ValueError, match=r"^Vista Latent Fusion Sampler: a 16384x16384 px .* 15,625 windows per step"
                                             r".* Refused before the model runs; MAD needs every window"):
            sample_custom(comfy, watched, sampler, pos, neg, 2048, 2048, steps=1)
        assert calls == []
