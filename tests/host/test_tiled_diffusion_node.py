"""Node tier: Vista Tiled Diffusion inside the real host (COMFYUI_PATH), no server."""
import os
from pathlib import Path

import pytest
import torch

from host import encode, import_host, load_checkpoint

@pytest.fixture(scope="module")
def host():
    comfy = import_host()
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    model, clip, vae = load_checkpoint()
    return comfy, VistaTiledDiffusion, model, encode(clip, "a panorama of mountains"), encode(clip, "")


def sample(comfy, model, positive, negative, height, width, steps=3, seed=7, sampler="euler"):
    latent = torch.zeros(1, 4, height, width)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, 5.0, sampler, "normal", positive, negative, latent,
                               disable_pbar=True, seed=seed)


def patch_model(node, model, **kw):
    args = dict(window_width=512, window_height=512, stride_x=128, stride_y=128, weight_mode="uniform",
                wrap_x=False, window_batch_size=4)
    args.update(kw)
    return node.execute(model, **args).result[0]


class TestTiledDiffusionNode:
    def test_window_equals_canvas_matches_unpatched(self, host):
        """One window covering the canvas = the unpatched KSampler, same seed (tolerance 1e-4)."""
        comfy, node, model, pos, neg = host
        plain = sample(comfy, model, pos, neg, 32, 32)
        tiled = sample(comfy, patch_model(node, model, window_width=256, window_height=256), pos, neg, 32, 32)
        assert (tiled - plain).abs().max().item() <= 1e-4

    @pytest.mark.parametrize("weight_mode, sampler", [("uniform", "dpmpp_2m"), ("gaussian", "euler_ancestral"),
                                                      ("guided", "heun")])
    def test_panorama_any_sampler(self, host, weight_mode, sampler):
        comfy, node, model, pos, neg = host
        out = sample(comfy, patch_model(node, model, window_width=256, window_height=256, stride_x=64,
                                  weight_mode=weight_mode, wrap_x=weight_mode == "guided"), pos, neg, 32, 80, steps=2,
                     sampler=sampler)
        assert out.shape == (1, 4, 32, 80) and torch.isfinite(out).all()

    def test_input_model_not_modified(self, host):
        comfy, node, model, pos, neg = host
        patch_model(node, model)
        assert "model_function_wrapper" not in model.model_options

    def test_chains_existing_wrapper(self, host):
        comfy, node, model, pos, neg = host
        seen = []
        inner = model.clone()

        def previous(apply_model, args):
            seen.append(tuple(args["input"].shape))
            return apply_model(args["input"], args["timestep"], **args["c"])

        inner.set_model_unet_function_wrapper(previous)
        sample(comfy, patch_model(node, inner, window_width=256, window_height=256, stride_x=128), pos, neg, 32, 64, steps=1)
        assert seen and all(s[-2:] == (32, 32) for s in seen)

    def test_second_tiled_diffusion_refused(self, host):
        """Issue [H] 8: a second Vista Tiled Diffusion on the same model is refused at the node (before, the outer patch
        re-tiled the inner one's windows silently), also with another patch chained in between."""
        from vista.nodes.mad import VistaMADAttention

        comfy, node, model, pos, neg = host
        first = patch_model(node, model, window_width=256, window_height=256)
        between = VistaMADAttention.execute(first, tau=0.3, input_blocks=True, middle_block=True, output_blocks=True).result[0]
        for patched in (first, between):
            with pytest.raises(ValueError, match=r"^Vista Tiled Diffusion: model is already patched by a Vista Tiled "
                                                 r"Diffusion node upstream; .* Remove one of the two"):
                patch_model(node, patched, window_width=384, window_height=384)
        patch_model(node, model, window_width=384, window_height=384)  # the unpatched model stays patchable

    def test_window_larger_than_canvas_is_clamped_with_warning(self, host, caplog):
        """A window wider than the image/area (area conditioning crops the model input) is clamped
        to it with a warning naming the input; the result is the plain sampler's (tolerance 1e-4)."""
        comfy, node, model, pos, neg = host
        plain = sample(comfy, model, pos, neg, 32, 16, steps=1)
        with caplog.at_level("WARNING"):
            tiled = sample(comfy, patch_model(node, model), pos, neg, 32, 16, steps=1)
        assert "window_width=512 px is larger than the image/area width 128 px" in caplog.text
        assert (tiled - plain).abs().max().item() <= 1e-4

    def test_area_conditioning_and_inpaint_mask(self, host):
        """Area conditioning (model called on the area crop) and an inpainting noise mask both work."""
        comfy, node, model, pos, neg = host
        import node_helpers

        area = node_helpers.conditioning_set_values(pos, {"area": (16, 16, 0, 8), "strength": 1.0,
                                                           "set_area_to_bounds": False})
        latent = torch.zeros(1, 4, 32, 64)
        mask = torch.zeros(1, 1, 32, 64)
        mask[..., 16:] = 1.0
        noise = comfy.sample.prepare_noise(latent, 1)
        out = comfy.sample.sample(patch_model(node, model, window_width=256, window_height=256), noise, 2, 5.0, "euler",
                                  "normal", pos + area, neg, latent, noise_mask=mask, disable_pbar=True, seed=1)
        assert torch.isfinite(out).all()
        assert (out[..., :8] - latent[..., :8]).abs().max().item() <= 1e-4  # unmasked columns keep the source

    def test_size_not_multiple_of_factor(self, host):
        comfy, node, model, pos, neg = host
        with pytest.raises(ValueError, match="stride_x=100 px must be a positive multiple of 8"):
            patch_model(node, model, stride_x=100)


def wrapper_of(model):
    """The Vista patch installed on a patched MODEL (its model_function_wrapper)."""
    return model.model_options["model_function_wrapper"]


def identity_call(x, sigma, c=None):
    """A wrapper call whose model returns its input: the fused result must be the input again."""
    return {"input": x, "timestep": sigma, "c": c or {"transformer_options": {}}, "cond_or_uncond": [0] * x.shape[0]}


class TestPrecisionAndDevices:
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("weight_mode", ["uniform", "gaussian", "guided"])
    def test_half_precision_latents(self, host, dtype, weight_mode):
        """Issue [R] 3: fp16/bf16 latents through the real patch. A constant canvas must fuse back to itself,
        finite everywhere (fp16 gaussian weights used to underflow to 0 at the corners: 0/0 = NaN) and within
        one rounding of the dtype (bf16 guided fusion of a constant was off by 1e-3)."""
        comfy, node, model, pos, neg = host
        patch = wrapper_of(patch_model(node, model, window_width=256, window_height=256, stride_x=64, stride_y=64,
                                       weight_mode=weight_mode))
        x = torch.full((2, 4, 48, 96), 0.7, dtype=dtype)
        out = patch(lambda x, t, **c: x, identity_call(x, torch.ones(2, dtype=dtype)))
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert (out.float() - 0.7).abs().max().item() <= 0.7 * torch.finfo(dtype).eps


class TestStrideAlignment:
    """Issue [R] 5: strides are honoured exactly unless this run needs the UNet grid (ControlNet residuals in the
    call, or a Vista MAD patch on the model); then they are snapped down with a warning naming the input."""

    def offsets(self, model):
        (plan,) = wrapper_of(model).plans.plans.values()
        return sorted({w.x for w in plan.windows})

    def test_user_stride_kept_without_control_or_mad(self, host, caplog):
        comfy, node, model, pos, neg = host
        patched = patch_model(node, model, window_width=256, window_height=256, stride_x=104, stride_y=104)
        with caplog.at_level("WARNING"):
            sample(comfy, patched, pos, neg, 32, 80, steps=1)
        assert self.offsets(patched) == [0, 13, 26, 39, 48]  # 104 px = 13 latent px, kept (the slim UNet's grid is 2)
        assert "stride_x" not in caplog.text

    def test_snapped_with_warning_under_mad(self, host, caplog):
        comfy, node, model, pos, neg = host
        from vista.nodes.mad import VistaMADAttention

        patched = patch_model(node, model, window_width=256, window_height=256, stride_x=104, stride_y=104)
        patched = VistaMADAttention.execute(patched, tau=1.0, input_blocks=True, middle_block=True, output_blocks=True).result[0]
        with caplog.at_level("WARNING"):
            sample(comfy, patched, pos, neg, 32, 80, steps=1)
        assert self.offsets(patched) == [0, 12, 24, 36, 48]
        assert "stride_x=104 px is not a multiple of the UNet grid 16 px, which a Vista MAD patch needs; using 96 px" \
            in caplog.text


class TestValidationPolicy:
    """Issue [R] 14: one policy. Relations in validate_inputs with a hint that fits; wrong-rank latents refused
    naming the node; core errors reach ComfyUI as plain ValueErrors (a pack exception type prints as a path)."""

    @pytest.mark.parametrize("kw, message", [
        (dict(stride_x=0), "stride_x=0 px must be in [8, 16384] px"),
        (dict(stride_y=-64), "stride_y=-64 px must be in [8, 16384] px"),
        (dict(stride_x=600), "stride_x=600 px must be at most window_width=512 px; a stride larger than the window "
                             "leaves gaps between windows"),
        (dict(window_width=32), "window_width=32 px must be in [64, 16384] px")])
    def test_validate_inputs_hint_fits_the_failure(self, host, kw, message):
        _, node, *_ = host
        args = dict(window_width=512, window_height=512, stride_x=128, stride_y=128)
        args.update(kw)
        assert node.validate_inputs(**args) == f"Vista Tiled Diffusion: {message}"

    def test_video_latent_refused_naming_the_node(self, host):
        comfy, node, model, pos, neg = host
        patch = wrapper_of(patch_model(node, model))
        with pytest.raises(ValueError, match=r"^Vista Tiled Diffusion: the sampled latent must be an image latent "
                                             r"of shape \(batch, channels, height, width\), got \(1, 16, 5, 32, 32\)"):
            patch(lambda x, t, **c: x, identity_call(torch.zeros(1, 16, 5, 32, 32), torch.ones(1)))

    def test_core_errors_are_plain_value_errors(self, host):
        comfy, node, model, pos, neg = host
        patch = wrapper_of(patch_model(node, model, window_batch_size=1))
        patch.batch_size = 0  # a core precondition (window batch size >= 1) fails inside the patch
        with pytest.raises(ValueError) as error:
            patch(lambda x, t, **c: x, identity_call(torch.zeros(1, 4, 32, 32), torch.ones(1)))
        assert type(error.value) is ValueError and str(error.value).startswith("Vista Tiled Diffusion: ")


class TestPromptBatch:
    def test_two_prompts_reach_their_own_samples(self, host):
        """Issue [R] 8 (prediction route): a batch of two different prompts = two single-prompt runs."""
        comfy, node, model, pos, neg = host
        from host import encode, load_checkpoint

        _, clip, _ = load_checkpoint()
        prompts = [encode(clip, "a red desert"), encode(clip, "a snowy forest")]
        both = [[torch.cat([p[0][0] for p in prompts]), {"pooled_output": torch.cat([p[0][1]["pooled_output"] for p in prompts])}]]
        patched = patch_model(node, model, window_width=256, window_height=256, stride_x=64, stride_y=64)
        latent = torch.zeros(2, 4, 32, 48)
        noise = comfy.sample.prepare_noise(latent, 5)
        batch = comfy.sample.sample(patched, noise, 2, 5.0, "euler", "normal", both, neg, latent, disable_pbar=True, seed=5)
        for b in range(2):
            single = comfy.sample.sample(patched, noise[b : b + 1], 2, 5.0, "euler", "normal", prompts[b], neg,
                                         latent[b : b + 1], disable_pbar=True, seed=5)
            assert (batch[b : b + 1] - single).abs().max().item() <= 1e-4 * single.abs().max().item()


class TestMemoryReservation:
    """Issue [M]: ComfyUI sizes its model-loading reservation from the latent's shape (prepare_sampling →
    estimate_memory); Vista Tiled Diffusion's PREPARE_SAMPLING wrapper hands it one window batch instead."""

    def reserved_shapes(self, comfy, model):
        """A clone whose innermost PREPARE_SAMPLING wrapper records the noise shape the estimate is made from."""
        shapes = []

        def record(executor, model, noise_shape, conds, *args, **kwargs):
            shapes.append(list(noise_shape))
            return executor(model, noise_shape, conds, *args, **kwargs)

        recorded = model.clone()
        recorded.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, "test_record", record)
        return recorded, shapes

    def test_estimate_counts_the_window_batch(self, host):
        comfy, node, model, pos, neg = host
        patched, shapes = self.reserved_shapes(comfy, patch_model(node, model, window_width=256, window_height=256,
                                                                   stride_x=64, window_batch_size=2))
        sample(comfy, patched, pos, neg, 32, 96, steps=1)
        assert shapes == [[2, 4, 32, 32]]  # 9 windows of 32x32 latent px, batches of 2
        canvas = model.model.memory_required([2, 4, 32, 96])
        window = model.model.memory_required([2 * 2, 4, 32, 32])
        print(f"\nestimate (cond+uncond): canvas 32x96 {canvas / 2**20:.1f} MiB -> window batch {window / 2**20:.1f} MiB")

    def test_estimate_counts_all_windows_under_mad(self, host):
        comfy, node, model, pos, neg = host
        from vista.nodes.mad import VistaMADAttention

        patched = patch_model(node, model, window_width=256, window_height=256, stride_x=128, window_batch_size=1)
        patched = VistaMADAttention.execute(patched, tau=1.0, input_blocks=True, middle_block=True, output_blocks=True).result[0]
        patched, shapes = self.reserved_shapes(comfy, patched)
        sample(comfy, patched, pos, neg, 32, 64, steps=1)
        assert shapes == [[3, 4, 32, 32]]  # MAD merges all 3 windows in one call

    def test_unpatched_model_estimates_the_canvas(self, host):
        comfy, node, model, pos, neg = host
        patched, shapes = self.reserved_shapes(comfy, model)
        sample(comfy, patched, pos, neg, 32, 64, steps=1)
        assert shapes == [[1, 4, 32, 64]]


def recorded_progress(comfy, run):
    """The (value, total) progress reports ComfyUI's UI would get while ``run()`` samples (the host's global hook)."""
    reports = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: reports.append((value, total)))
    try:
        run()
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    return reports


class TestProgress:
    def test_progress_per_window_batch(self, host):
        """Issue [F] 3: 9 windows in batches of 4 = 3 batches per step, 3 steps: the bar moves before batches 2 and 3
        of every step, on the sampler's scale (step i ends at (i + 1) / 3 = 3 (i + 1) / 9, reported by the sampler)."""
        comfy, node, model, pos, neg = host
        patched = patch_model(node, model, window_width=256, window_height=256, stride_x=64, window_batch_size=4)
        reports = recorded_progress(comfy, lambda: sample(comfy, patched, pos, neg, 32, 96, steps=3))
        assert reports == [(1, 9), (2, 9), (4, 9), (5, 9), (7, 9), (8, 9)]

    def test_progress_inside_mad_merged_calls(self, host):
        """Issue [H] 10: with MAD active at both steps (tau 1) all 3 windows go in one call per step; the bar moves
        per UNet block of that call (4 input + 4 output blocks = 8 units per step, the step's end left to the
        sampler), where it stood still for the whole step before."""
        from vista.nodes.mad import VistaMADAttention

        comfy, node, model, pos, neg = host
        patched = patch_model(node, model, window_width=256, window_height=256, stride_x=128, window_batch_size=1)
        patched = VistaMADAttention.execute(patched, tau=1.0, input_blocks=True, middle_block=True, output_blocks=True).result[0]
        reports = recorded_progress(comfy, lambda: sample(comfy, patched, pos, neg, 32, 64, steps=2))
        assert reports == [(1, 16), (2, 16), (3, 16), (4, 16), (5, 16), (6, 16), (7, 16),
                           (9, 16), (10, 16), (11, 16), (12, 16), (13, 16), (14, 16), (15, 16)]

    def test_interrupt_within_one_window_batch(self, host):
        """The interrupt flag set while batch 1 runs stops the run before batch 2 starts."""
        comfy, node, model, pos, neg = host
        calls = []
        inner = model.clone()

        def interrupt_after_first(apply_model, args):
            calls.append(args["input"].shape[0])
            comfy.model_management.interrupt_current_processing(True)
            return apply_model(args["input"], args["timestep"], **args["c"])

        inner.set_model_unet_function_wrapper(interrupt_after_first)
        patched = patch_model(node, inner, window_width=256, window_height=256, stride_x=64, window_batch_size=4)
        try:
            with pytest.raises(comfy.model_management.InterruptProcessingException):
                sample(comfy, patched, pos, neg, 32, 96, steps=3)
        finally:
            comfy.model_management.interrupt_current_processing(False)
        assert len(calls) == 1


def padded(conditioning):
    """The same prompts with their context repeated 5 times. Attention over repeated keys is unchanged (the host pads
    prompts of other lengths this way, "padding with repeat doesn't change result"), but the host never batches a
    385-token prompt with a 77-token one (lcm ratio 5 > 4): the negative and positive prompts then go in separate
    model calls, each with a one-entry cond_or_uncond, where nothing can split a batch wrongly."""
    return [[context.repeat(1, 5, 1), dict(options)] for context, options in conditioning]


def recording(model):
    """A clone of ``model`` whose inner model_function_wrapper records every window call's cond_or_uncond."""
    seen, model = [], model.clone()

    def record(apply_model, args):
        seen.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(record)
    return model, seen


def relative_l2(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


# ComfyUI's NAG node exists from v0.33.0 on; on an older host its test is not collected (a skip would count as a
# failure in CI, and there is nothing to test). SAG exists on both hosts and is tested on both.
HOST_HAS_NAG = (Path(os.environ.get("COMFYUI_PATH", "")) / "comfy_extras" / "nodes_nag.py").is_file()


class TestBatchSplittingPatches:
    """Issue [H] 15: host patches that split a model call's batch into the chunks of ``cond_or_uncond`` (NAG's
    attention output patch, SAG's middle-block attention) see each chunk whole in every window batch, on SD1.5 (the
    test checkpoint) and SDXL (the in-process Segmind-Vega-shaped UNet). Measured before the fix (v0.33.0, 3 windows):
    NAG window_batch_size 4 vs 1 rel-L2 2.8e-2 (SD1.5) and 4.3e-2 (SDXL); SAG negative and positive prompt in one call
    vs in two calls 8.7e-2 / 9.5e-2. Without a patch every grouping agrees to ~2e-6."""

    @pytest.fixture(params=["sd15", "sdxl"])
    def case(self, request, host):
        """(model, positive, negative, window px, stride px, latent height, latent width): 3 windows per step."""
        comfy, node, model, pos, neg = host
        if request.param == "sd15":
            return model, pos, neg, 256, 128, 32, 64
        from host import sdxl_conditioning, sdxl_model

        return sdxl_model(), sdxl_conditioning(1), sdxl_conditioning(2), 512, 256, 64, 128

    def run(self, host, case, model, window_batch_size, negative=None):
        comfy, node, _, _, _ = host
        _, pos, neg, window, stride, height, width = case
        patched = patch_model(node, model, window_width=window, window_height=window, stride_x=stride, stride_y=stride,
                              window_batch_size=window_batch_size)
        return sample(comfy, patched, pos, neg if negative is None else negative, height, width, steps=2)

    if HOST_HAS_NAG:
        def test_nag_window_batch_size_changes_nothing(self, host, case):
            """NAG (ComfyUI's Normalized Attention Guidance, comfy_extras/nodes_nag.py; v0.33.0 on) pairs the positive
            chunk's rows with the negative chunk's rows: window_batch_size 4 (all 3 windows in one call) = 1."""
            from comfy_extras import nodes_nag

            model = case[0]
            nag, seen = recording(nodes_nag.NAGuidance.execute(model, 5.0, 0.5, 1.5).result[0])
            one, four = self.run(host, case, nag, 1), self.run(host, case, nag, 4)
            assert sorted(seen[0]) == [0, 1]  # the negative and positive prompts were batched: NAG acts
            assert relative_l2(one, self.run(host, case, model, 1)) > 1e-2  # and it changes the result
            assert relative_l2(four, one) < 1e-4

    def test_sag_records_the_negative_chunk(self, host, case):
        """SAG (comfy_extras/nodes_sag.py, both hosts) keeps the negative chunk's middle-block attention of the last
        model call: with every window in one call, negative and positive prompts batched together = in two calls."""
        from comfy_extras.nodes_sag import SelfAttentionGuidance

        model, _, neg = case[0], case[1], case[2]
        sag, seen = recording(SelfAttentionGuidance.execute(model, 0.5, 2.0).result[0])
        together = self.run(host, case, sag, 8)
        assert sorted(seen[0]) == [0, 1]
        seen.clear()
        apart = self.run(host, case, sag, 8, padded(neg))
        assert seen and all(len(chunks) == 1 for chunks in seen)  # the padded negative went in calls of its own
        assert relative_l2(apart, self.run(host, case, model, 8, padded(neg))) > 1e-2  # SAG acts
        assert relative_l2(together, apart) < 1e-4
