"""Node tier: Vista MAD Attention with Vista Tiled Diffusion inside the real host (COMFYUI_PATH)."""
import logging

import pytest
import torch

from host import deep_unet_model, encode, import_host, load_checkpoint, tiny_flux
from peak_bytes import PeakBytes


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

    def test_prompts_in_one_call_equal_prompts_in_two(self, host):
        """Issue [H] 15: Vista Tiled Diffusion keeps each conditioning of a model call one contiguous chunk of the
        window batch; MAD merges each chunk's windows on their own. The negative and positive prompts batched in one
        call = the same prompts in separate calls (the negative's context repeated 5 times, which changes no
        attention output but stops the host from batching it with the 77-token positive)."""
        comfy, tiled_node, mad_node, model, pos, neg = host
        seen, inner = [], model.clone()

        def record(apply_model, args):
            seen.append(list(args["cond_or_uncond"]))
            return apply_model(args["input"], args["timestep"], **args["c"])

        inner.set_model_unet_function_wrapper(record)
        patched = mad(mad_node, tiled(tiled_node, inner, 256, 128), 1.0)
        together = sample(comfy, patched, pos, neg, 32, 64)
        assert sorted(seen[0]) == [0, 1]
        seen.clear()
        apart = sample(comfy, patched, pos, [[c.repeat(1, 5, 1), dict(o)] for c, o in neg], 32, 64)
        assert seen and all(len(chunks) == 1 for chunks in seen)
        assert ((together - apart).norm() / apart.norm()).item() < 1e-4

    def test_no_blocks_selected(self, host):
        _, _, mad_node, model, *_ = host
        with pytest.raises(ValueError, match="no SpatialTransformer"):
            mad_node.execute(model, tau=0.3, input_blocks=False, middle_block=False, output_blocks=False)

    def test_huge_canvas_refused_before_the_network_runs(self, host):
        """Issue [F] 2: 16384² px through Tiled Diffusion + MAD used to die in the first convolution ("can't allocate
        81920000000 bytes"); now Tiled Diffusion's canvas budget (its PREPARE_SAMPLING wrapper) refuses it with the
        estimate before the model is loaded or any UNet block runs (MAD's own per-call check is the fallback)."""
        comfy, tiled_node, mad_node, model, pos, neg = host
        patched = mad(mad_node, tiled(tiled_node, model, 512, 128), 0.3).clone()
        blocks = []
        patched.set_model_input_block_patch(lambda h, options: blocks.append(1) or h)
        message = (r"^Vista Tiled Diffusion: a 16384x16384 px \(2048x2048 latent px\) canvas with 512x512 px \(64x64 latent px\) "
                   r"windows at stride 128x128 px \(16x16 latent px\), batch 1: 15,625 windows per step \(31,250 window "
                   r"evaluations with CFG\); one model call of 15,625 windows needs an estimated [\d,.]+ GB .* but only "
                   r"[\d,.]+ GB is free on cpu\. Refused before the model runs; .*raise stride_x/stride_y")
        with pytest.raises(ValueError, match=message):
            sample(comfy, patched, pos, neg, 2048, 2048)
        assert blocks == []

    @pytest.mark.parametrize("tau", [1.0, 0.0])
    def test_interrupt_stops_within_one_layer(self, host, tau):
        """The interrupt flag, set after the first attention layer, stops a merged call at the next layer (attn2 of
        the same block). Without MAD, v0.3.64 runs on to the next window batch (the whole network first); v0.33.0
        checks the flag before every Linear/Conv op itself (comfy.ops.run_every_op), so both stop at once there."""
        comfy, tiled_node, mad_node, model, pos, neg = host
        import comfy.model_management as mm
        import comfy.ops

        patched = mad(mad_node, tiled(tiled_node, model, 256, 128), tau).clone()
        layers = []

        def interrupt(n, extra_options):
            layers.append(extra_options["block"])
            mm.interrupt_current_processing(True)
            return n

        patched.set_model_attn1_output_patch(interrupt)
        try:
            with pytest.raises(mm.InterruptProcessingException):
                sample(comfy, patched, pos, neg, 32, 64)
        finally:
            mm.interrupt_current_processing(False)
        host_checks_every_op = hasattr(comfy.ops, "run_every_op")
        assert (len(layers) == 1) if tau or host_checks_every_op else (len(layers) > 1), layers


class TestOffGridCanvas:
    """Issue [H] 3: a canvas whose last window starts off the UNet's grid (here 2 levels: a 16 px grid) used to run
    with that window's merged tokens one rounded position away (536 px = 67 latent px, 256 px windows at stride
    128 px: the last window at 35 latent px, 17.5 tokens at the 1/2 block, merged at 18). It is refused, naming the
    canvas and the nearest sizes that work, before the network runs; the sizes it names do run."""

    def blocks_seen(self, model):
        blocks, patched = [], model.clone()
        patched.set_model_input_block_patch(lambda h, options: blocks.append(1) or h)
        return patched, blocks

    @pytest.mark.parametrize("wrap, says", [
        (False, r"the last 256 px window starts at x = 280 px, off it, .* Make the latent 528 or 544 px wide "
                r"\(window_width 256 px \+ a multiple of 16 px\), or change window_width"),
        (True, r"with wrap_x the windows that wrap past the right edge continue off it \(the width 536 px is not a "
               r"multiple of 16 px\), .* Make the latent 528 or 544 px wide \(a multiple of 16 px\)")])
    def test_tiled_diffusion_refuses(self, host, wrap, says):
        comfy, tiled_node, mad_node, model, pos, neg = host
        patched, blocks = self.blocks_seen(mad(mad_node, tiled(tiled_node, model, 256, 128, wrap=wrap), 1.0))
        message = (r"^Vista Tiled Diffusion: a Vista MAD patch needs every window on the 16 px grid, but on this "
                   r"536x256 px canvas \(67x32 latent px\) " + says)
        with pytest.raises(ValueError, match=message):
            sample(comfy, patched, pos, neg, 32, 67, steps=1)
        assert blocks == []

    def test_latent_fusion_sampler_refuses(self, host):
        comfy, _, mad_node, model, pos, neg = host
        from vista.nodes.latent_fusion import VistaLatentFusionSampler

        sampler = VistaLatentFusionSampler.execute(window_width=256, window_height=256, stride_x=128, stride_y=128,
                                                   weight_mode="guided", wrap_x=False, window_batch_size=4, eta=0.0,
                                                   s_noise=1.0, variance_corrected=True).result[0]
        patched, blocks = self.blocks_seen(mad(mad_node, model, 1.0))
        guider = comfy.samplers.CFGGuider(patched)
        guider.set_conds(pos, neg)
        guider.set_cfg(5.0)
        latent = torch.zeros(1, 4, 32, 67)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 1).cpu()
        with pytest.raises(ValueError, match=r"^Vista Latent Fusion Sampler: a Vista MAD patch needs every window on the "
                                             r"16 px grid, but on this 536x256 px canvas .* 528 or 544 px wide"):
            guider.sample(comfy.sample.prepare_noise(latent, 3), latent, sampler, sigmas, disable_pbar=True, seed=3)
        assert blocks == []

    def test_nearest_size_runs(self, host):
        comfy, tiled_node, mad_node, model, pos, neg = host
        out = sample(comfy, mad(mad_node, tiled(tiled_node, model, 256, 128), 1.0), pos, neg, 32, 66, steps=1)
        assert out.shape == (1, 4, 32, 66) and torch.isfinite(out).all()


def comfy_attention():
    import comfy.ldm.modules.attention

    return comfy.ldm.modules.attention


class TestUnusedPatchWarning:
    """Issue [H] 8: a MAD patch that no Vista windowed route samples merges nothing; the user is told (warn_user:
    the server log and a vista.warning toast) instead of getting the unpatched sample without a word."""

    UNUSED = "Vista MAD Attention: no Vista windowed sampling ran this model, so MAD changed nothing"

    def test_straight_into_ksampler_warns(self, host, caplog):
        comfy, _, mad_node, model, pos, neg = host
        with caplog.at_level(logging.WARNING):
            patched = sample(comfy, mad(mad_node, model, 0.3), pos, neg, 32, 32)
        assert self.UNUSED in caplog.text
        assert torch.equal(patched, sample(comfy, model, pos, neg, 32, 32))  # the no-op it warns about

    @pytest.mark.parametrize("order", ["mad_then_tiled", "tiled_then_mad"])
    def test_silent_when_tiled_diffusion_merges(self, host, caplog, order):
        comfy, tiled_node, mad_node, model, pos, neg = host
        patched = (tiled(tiled_node, mad(mad_node, model, 0.5), 256, 128) if order == "mad_then_tiled"
                   else mad(mad_node, tiled(tiled_node, model, 256, 128), 0.5))
        with caplog.at_level(logging.WARNING):
            sample(comfy, patched, pos, neg, 32, 64)
        assert "MAD changed nothing" not in caplog.text

    def test_tau_rounding_to_no_step_warns(self, host, caplog):
        """tau 0.2 of 2 steps: round-half-up(0.4) = 0 merged steps, even under Vista Tiled Diffusion."""
        comfy, tiled_node, mad_node, model, pos, neg = host
        with caplog.at_level(logging.WARNING):
            sample(comfy, mad(mad_node, tiled(tiled_node, model, 256, 128), 0.2), pos, neg, 32, 64)
        assert ("Vista MAD Attention: tau=0.2 of 2 steps rounds to 0 merged steps, so MAD changed nothing; set tau "
                "to at least 0.25 for 1 step") in caplog.text

    def test_tau_zero_is_off_and_silent(self, host, caplog):
        comfy, _, mad_node, model, pos, neg = host
        with caplog.at_level(logging.WARNING):
            sample(comfy, mad(mad_node, model, 0.0), pos, neg, 32, 32)
        assert "MAD changed nothing" not in caplog.text


class TestCanvasBudget:
    """nodes/budget.py against the real host: UNet levels, the estimate vs measured activations, refuse/warn."""

    def test_unet_geometry(self, host):
        from vista.core.canvas.budget import UNetGeometry
        from vista.nodes.budget import unet_geometry

        _, _, _, model, *_ = host
        assert unet_geometry(model.get_model_object("diffusion_model")) == UNetGeometry(320, (1, 1), (1, 1), (False, True), 8)
        deep = deep_unet_model().get_model_object("diffusion_model")
        assert unet_geometry(deep) == UNetGeometry(32, (1, 1, 1, 1), (1, 1, 1, 1), (False, False, True, True), 8)
        first = next(m for m in deep.modules() if isinstance(m, comfy_attention().SpatialTransformer))
        assert first.transformer_blocks[0].attn1.heads == 8  # the host's SD15 config sets 8 heads

    def test_estimate_matches_the_measured_window_activations(self, host):
        """Per extra window in one model call, the estimate is within -10 %…+20 % of the live-tensor peak measured
        on the host's network (4 vs 8 disjoint 256 px windows in one call, one conditioning)."""
        from vista.core.canvas.budget import unet_window_elements
        from vista.nodes.budget import unet_geometry

        comfy, tiled_node, _, model, pos, neg = host
        patched = tiled_node.execute(model, window_width=256, window_height=256, stride_x=256, stride_y=256,
                                     weight_mode="uniform", wrap_x=False, window_batch_size=8).result[0]
        peaks = {}
        for n in (4, 8):
            latent = torch.zeros(1, 4, 32, 32 * n)
            noise = comfy.sample.prepare_noise(latent, 0)
            tracker = PeakBytes()
            with tracker:
                comfy.sample.sample(patched, noise, 1, 1.0, "euler", "normal", pos, neg, latent, disable_pbar=True, seed=0)
            peaks[n] = tracker.peak
        measured = (peaks[8] - peaks[4]) / 4
        estimate = unet_window_elements(unet_geometry(model.get_model_object("diffusion_model")), (32, 32)) * 4
        assert 0.9 * measured <= estimate <= 1.2 * measured, (estimate, measured)

    def check(self, model, size, mad_active, batch=4):
        from vista.core.canvas.windows import plan_windows
        from vista.nodes.budget import check_canvas_budget

        windows = plan_windows(size, size, 64, 64, 16, 16)
        check_canvas_budget("Vista Tiled Diffusion", model, (size, size), len(windows), batch, mad_active, None,
                            window_hw_latent=(64, 64), stride_hw_latent=(16, 16), factor=8)

    def test_refuses_a_huge_mad_canvas(self, host):
        _, _, _, model, *_ = host
        with pytest.raises(ValueError, match=r"^Vista Tiled Diffusion: a 16384x16384 px .* 15,625 windows per step .*"
                                             r"\+ [\d,.]+ GB for MAD's merged attention\), but only [\d,.]+ GB is free"):
            self.check(model, 2048, True)

    def test_warns_about_a_huge_canvas_without_mad(self, host, caplog):
        """Possible (4 windows per call) but 15,625 windows per step: a warning with the numbers, no refusal."""
        _, _, _, model, *_ = host
        with caplog.at_level(logging.WARNING):
            self.check(model, 2048, False)
        assert any("15,625 windows per step (31,250 window evaluations per step with CFG" in r.getMessage()
                   for r in caplog.records)

    def test_small_canvas_is_silent(self, host, caplog):
        _, _, _, model, *_ = host
        with caplog.at_level(logging.WARNING):
            self.check(model, 128, True)
        assert not [r for r in caplog.records if "Vista" in r.getMessage()]

    def test_dit_counts_with_the_host_estimate(self, host, caplog):
        """No UNet levels on a DiT: the window batch is counted with the host's own memory_required (Flux, 4 windows
        of 64x64 latent px per call fit); the 15,625 windows per step still warn."""
        from vista.nodes.budget import check_canvas_budget, unet_geometry

        flux, _ = tiny_flux()
        assert unet_geometry(flux.get_model_object("diffusion_model")) is None
        with caplog.at_level(logging.WARNING):
            check_canvas_budget("Vista Tiled Diffusion", flux, (2048, 2048), 15_625, 4, False, torch.float32,
                                window_hw_latent=(64, 64))
        assert any("15,625 windows per step" in r.getMessage() for r in caplog.records)
