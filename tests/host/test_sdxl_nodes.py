"""Node tier: every Vista node on an SDXL-family model inside the real host (COMFYUI_PATH), no server, no mocks.

The MODEL is built in-process from the host's own classes (tests/support/host.py ``sdxl_model``:
``supported_models.Segmind_Vega`` → ``model_base.SDXL``, SDXL's 3-level geometry at 64/64/128 channels) and
the CONDITIONING tensors directly (``sdxl_conditioning``: context (B, 77, 2048), pooled (B, 1280)), because
CLIP-G is too slow for this tier on 2 CPU cores; ComfyUI computes ``y`` from them with its own
``SDXL.encode_adm``. The slim SDXL test checkpoint (detection, CLIP-L/G, TAESD) is exercised by
test_sdxl_checkpoint.py and the e2e tier (workflows/panorama_sdxl.json). Latents are small (16-64 latent px,
128-512 px windows) and runs 1-2 steps, for 2 shared CPU cores.
"""
import math

import pytest
import torch

from host import import_host, sdxl_conditioning, sdxl_model

CFG, SEED = 5.0, 7


@pytest.fixture(scope="module")
def host():
    comfy = import_host()
    from vista.nodes import latent_fusion, mad, style_alignment, tiled_diffusion

    nodes = {"tiled": tiled_diffusion.VistaTiledDiffusion, "fusion": latent_fusion.VistaLatentFusionSampler,
             "mad": mad.VistaMADAttention, "style": style_alignment.VistaStyleAlignment}
    return comfy, nodes, sdxl_model(), sdxl_conditioning(1), sdxl_conditioning(2)


def sample(comfy, model, pos, neg, height, width, steps=2, sampler="euler", seed=SEED):
    """KSampler's path (comfy.sample.sample) on an empty latent."""
    latent = torch.zeros(1, 4, height, width)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, CFG, sampler, "normal", pos, neg, latent, disable_pbar=True, seed=seed)


def sample_custom(comfy, model, sampler, pos, neg, height, width, steps=2, seed=SEED, noise=None, stop_after=None,
                  noise_seed=None):
    """SamplerCustomAdvanced's path: CFGGuider + a SAMPLER + BasicScheduler(normal) sigmas."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(pos, neg)
    guider.set_cfg(CFG)
    latent = torch.zeros(1, 4, height, width)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()
    sigmas = sigmas if stop_after is None else sigmas[: stop_after + 1]
    noise = comfy.sample.prepare_noise(latent, seed if noise_seed is None else noise_seed) if noise is None else noise
    return guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=seed)


def tiled(nodes, model, window, stride, **kw):
    args = dict(window_width=window, window_height=window, stride_x=stride, stride_y=stride, weight_mode="uniform",
                wrap_x=False, window_batch_size=4)
    args.update(kw)
    return nodes["tiled"].execute(model, **args).result[0]


def fusion(nodes, window, stride, **kw):
    args = dict(window_width=window, window_height=window, stride_x=stride, stride_y=stride, weight_mode="guided",
                wrap_x=False, window_batch_size=4, eta=0.0, s_noise=1.0, variance_corrected=True)
    args.update(kw)
    return nodes["fusion"].execute(**args).result[0]


def recording(model):
    """A clone whose model_function_wrapper records every UNet call as (input shape, cond_or_uncond, y)."""
    calls = []

    def record(apply_model, args):
        calls.append((tuple(args["input"].shape), list(args["cond_or_uncond"]), args["c"]["y"].clone()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched = model.clone()
    patched.set_model_unet_function_wrapper(record)
    return patched, calls


def told(y_row: torch.Tensor) -> list[int]:
    """The six integers (height, width, crop_h, crop_w, target_height, target_width) a ``y`` row tells the UNet:
    each 256-dim field's slowest sinusoid (cos at index 127, sin at 255) gives its value, exact below 58 000 px."""
    f = math.exp(-math.log(10000.0) * 127 / 128)
    fields = y_row[-6 * 256:].double().view(6, 256)
    return [round(math.atan2(float(e[255]), float(e[127])) % (2 * math.pi) / f) for e in fields]


def relative(a, b) -> float:
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)


class TestSDXLFamilyModel:
    def test_in_process_model_is_sdxl(self, host):
        """The test MODEL is what ComfyUI builds for SDXL checkpoints: model_base.SDXL, SDXL latent format, eps."""
        comfy, *_ , model, pos, neg = host
        from vista.nodes._common import latent_factor, takes_size_conditioning, unet_alignment

        assert isinstance(model.model, comfy.model_base.SDXL)
        assert type(model.get_model_object("latent_format")).__name__ == "SDXL"
        assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.EPS)
        assert takes_size_conditioning(model) and latent_factor(model) == 8 and unet_alignment(model) == 4


class TestSizeConditioning:
    """Per-window SDXL micro-conditioning (core/canvas/micro_conditioning.py) on both routes."""

    def test_embedding_is_the_hosts_encode_adm(self, host):
        """Bit-identical to ComfyUI's own SDXL.encode_adm, for the canvas default and for explicit sizes."""
        comfy, nodes, model, pos, neg = host
        from vista.core.canvas.micro_conditioning import size_embedding, window_size_conditioning
        from vista.core.canvas.windows import Window

        pooled = pos[0][1]["pooled_output"]
        canvas = model.model.encode_adm(pooled_output=pooled, width=512, height=256)
        assert torch.equal(window_size_conditioning(canvas, [Window(0, 0, 32, 64)], 8), canvas)
        explicit = model.model.encode_adm(pooled_output=pooled, width=4096, height=2048, crop_w=1024, crop_h=8,
                                          target_width=1024, target_height=1024)
        ours = torch.cat([pooled, size_embedding(torch.tensor([[2048.0, 4096.0, 8.0, 1024.0, 1024.0, 1024.0]]))], dim=1)
        assert torch.equal(ours, explicit)
        assert torch.equal(window_size_conditioning(canvas, [Window(1, 128, 128, 128)], 8)[:, :1280 + 512],
                           canvas[:, :1280 + 512])  # pooled and original size kept
        assert told(window_size_conditioning(canvas, [Window(1, 128, 128, 128)], 8)[0]) == [256, 512, 8, 1024, 1024, 1024]

    def test_window_equals_canvas_y_is_the_hosts(self, host):
        """One window covering the canvas: the UNet gets exactly the y of the unpatched sampler (torch.equal)."""
        comfy, nodes, model, pos, neg = host
        plain_model, plain = recording(model)
        sample(comfy, plain_model, pos, neg, 16, 32, steps=1)
        patched, windowed = recording(model)
        sample(comfy, tiled(nodes, patched, 256, 128, window_height=128), pos, neg, 16, 32, steps=1)
        assert len(plain) == len(windowed) >= 1
        assert all(torch.equal(a[2], b[2]) for a, b in zip(plain, windowed))

    @pytest.mark.parametrize("on", [True, False])
    def test_told_matches_seen(self, host, on):
        """The measurement behind the default (window_size_conditioning = true): what each window is told
        (crop, target size) against what the UNet sees (the window's offset in the canvas and its size).

        A 128x384 px canvas, 128 px windows at stride 128 px: 3 windows. On: every row tells its own window,
        0 px off. Off (ComfyUI's default y, computed for the canvas): every window is told crop (0, 0) and
        target 128x384 px while it sees 128x128 px at crops 0/128/256: target width off by 256 px for all 3,
        crop off by 0/128/256 px. Random weights say nothing about image quality; this only measures whether
        the micro-conditioning is true to the input, as it was in SDXL's training (Podell et al. 2023 §2.2-2.3).
        """
        comfy, nodes, model, pos, neg = host
        inner, calls = recording(model)
        sample(comfy, tiled(nodes, inner, 128, 128, window_size_conditioning=on), pos, neg, 16, 48, steps=1)
        seen, errors = [], []
        for shape, cond_or_uncond, y in calls:
            n_rows = shape[0]
            for row in range(n_rows):
                height, width, crop_h, crop_w, target_h, target_w = told(y[row])
                assert (height, width) == (128, 384)  # the original size is the canvas either way
                seen.append((crop_h, crop_w))
                errors.append(abs(target_h - shape[2] * 8) + abs(target_w - shape[3] * 8))
        crops = sorted(set(seen))
        print(f"\nwindow_size_conditioning={on}: told crops {crops}, target-size error per row (px): "
              f"{sorted(set(errors))}")
        if on:
            assert crops == [(0, 0), (0, 128), (0, 256)] and set(errors) == {0}
        else:
            assert crops == [(0, 0)] and set(errors) == {256}

    def test_explicit_original_size_kept(self, host):
        """CLIPTextEncodeSDXL's width/height (the original size) are kept; crop and target become the window's."""
        comfy, nodes, model, pos, neg = host
        inner, calls = recording(model)
        pos_sized = sdxl_conditioning(1, width=4096, height=2048, crop_w=64, crop_h=64)
        sample(comfy, tiled(nodes, inner, 128, 128), pos_sized, neg, 16, 32, steps=1)
        rows = {tuple(told(y[r])) for shape, _, y in calls for r in range(shape[0])}
        assert rows == {(2048, 4096, 0, 0, 128, 128), (2048, 4096, 0, 128, 128, 128),  # positive: its own original
                        (128, 256, 0, 0, 128, 128), (128, 256, 0, 128, 128, 128)}  # negative: ComfyUI's (the canvas)

    def test_latent_route_windows_told_their_crop(self, host):
        """Latent Fusion Sampler, 3 windows in batches of 2 (2 calls per step), 2 steps: every call's rows tell
        that call's windows, in plan order, for the negative and the positive block alike."""
        comfy, nodes, model, pos, neg = host
        inner, calls = recording(model)
        sample_custom(comfy, inner, fusion(nodes, 128, 128, window_batch_size=2), pos, neg, 16, 48, steps=2)
        assert [c[0][0] for c in calls] == [4, 2, 4, 2]  # (windows x cond/uncond) per call, 2 steps
        for shape, cond_or_uncond, y in calls:
            per_block = shape[0] // len(cond_or_uncond)
            crops = [told(y[r])[3] for r in range(shape[0])]
            expected = [0, 128][:per_block] if per_block == 2 else [256]
            assert crops == expected * len(cond_or_uncond)
            assert all(told(y[r])[4:] == [128, 128] for r in range(shape[0]))

    def test_latent_route_equals_tiled_route(self, host):
        """eta 0 latent fusion = Tiled Diffusion + stock euler with per-window micro-conditioning on both sides
        (3 windows, 2 steps; tolerance 1e-5 x max |latent|, float32 rounding)."""
        comfy, nodes, model, pos, neg = host
        fused = sample_custom(comfy, model, fusion(nodes, 128, 64, window_batch_size=2), pos, neg, 16, 32)
        patched = tiled(nodes, model, 128, 64, weight_mode="guided")
        euler = sample_custom(comfy, patched, comfy.samplers.sampler_object("euler"), pos, neg, 16, 32)
        print(f"\nlatent vs prediction route (SDXL, micro-conditioning on): relative diff {relative(fused, euler):.1e}")
        assert relative(fused, euler) <= 1e-5


class TestTiledDiffusionSDXL:
    def test_window_equals_canvas_matches_unpatched(self, host):
        """One window covering the canvas = the unpatched KSampler (tolerance 1e-6 x max |latent|; measured 0)."""
        comfy, nodes, model, pos, neg = host
        plain = sample(comfy, model, pos, neg, 16, 32)
        patched = sample(comfy, tiled(nodes, model, 256, 128, window_height=128), pos, neg, 16, 32)
        print(f"\nSDXL tiled (window = canvas) vs unpatched: relative diff {relative(patched, plain):.1e}")
        assert relative(patched, plain) <= 1e-6

    @pytest.mark.parametrize("weight_mode, sampler", [("gaussian", "dpmpp_2m"), ("guided", "euler_ancestral")])
    def test_panorama(self, host, weight_mode, sampler):
        comfy, nodes, model, pos, neg = host
        out = sample(comfy, tiled(nodes, model, 128, 64, weight_mode=weight_mode, wrap_x=weight_mode == "guided"),
                     pos, neg, 16, 48, sampler=sampler)
        assert out.shape == (1, 4, 16, 48) and torch.isfinite(out).all()


class TestLatentFusionSDXL:
    def test_window_equals_canvas_matches_stock_euler(self, host):
        """eta 0, one window covering the canvas = SamplerCustomAdvanced with stock euler (1e-5 x max |latent|)."""
        comfy, nodes, model, pos, neg = host
        fused = sample_custom(comfy, model, fusion(nodes, 256, 128, window_height=128), pos, neg, 16, 32)
        euler = sample_custom(comfy, model, comfy.samplers.sampler_object("euler"), pos, neg, 16, 32)
        print(f"\nSDXL latent fusion (window = canvas) vs stock euler: relative diff {relative(fused, euler):.1e}")
        assert relative(fused, euler) <= 1e-5

    @pytest.mark.parametrize("variance_corrected", [True, False])
    def test_eta1_panorama(self, host, variance_corrected):
        comfy, nodes, model, pos, neg = host
        sampler = fusion(nodes, 128, 64, eta=1.0, variance_corrected=variance_corrected, wrap_x=True, window_batch_size=2)
        out = sample_custom(comfy, model, sampler, pos, neg, 16, 48)
        assert out.shape == (1, 4, 16, 48) and torch.isfinite(out).all()

    def test_vcf_keeps_high_frequencies_in_overlaps(self, host):
        """The statistical check of test_latent_fusion_node.py on SDXL: high-frequency energy (mean squared
        Laplacian) of the fused step noise, overlap ÷ non-overlap columns, eta 1, uniform weights, the first step
        of a 4-step schedule. The noise is isolated as the difference of runs with the same initial noise and
        step seeds 1..3 vs 0. Plain averaging halves its energy in the overlap (~0.5); VCF keeps it (~1).
        Bounds: |VCF - 1| < 0.2, |average - 0.5| < 0.2 (measured: 0.92 and 0.46, means of 3 seeds).
        Two 128x256 px windows at stride 64 px on a 192x256 px canvas (overlap = latent columns 8..15;
        measured on columns 9..14 against 1..6 and 17..22, whose Laplacian stays inside one region)."""
        comfy, nodes, model, pos, neg = host
        overlap, alone = list(range(9, 15)), list(range(1, 7)) + list(range(17, 23))

        def energy(t, columns):
            lap = (t[..., 1:-1, 1:-1] * -4 + t[..., :-2, 1:-1] + t[..., 2:, 1:-1] + t[..., 1:-1, :-2] + t[..., 1:-1, 2:])
            return lap[..., [c - 1 for c in columns]].pow(2).mean().item()

        ratios = {}
        for vcf in (False, True):
            sampler = fusion(nodes, 128, 64, window_height=256, weight_mode="uniform", eta=1.0, variance_corrected=vcf)
            runs = [sample_custom(comfy, model, sampler, pos, neg, 32, 24, steps=4, seed=s, noise_seed=SEED, stop_after=1)
                    for s in (0, 1, 2, 3)]
            per_seed = [energy(r - runs[0], overlap) / energy(r - runs[0], alone) for r in runs[1:]]
            ratios[vcf] = sum(per_seed) / len(per_seed)
            print(f"\nSDXL variance_corrected={vcf}: step-noise HF energy overlap/non-overlap {[round(r, 3) for r in per_seed]}")
        assert abs(ratios[True] - 1) < 0.2 and abs(ratios[False] - 0.5) < 0.2


class TestStyleAlignmentSDXL:
    def test_alpha_zero_is_random_noise(self, host):
        """alpha 0 = ComfyUI's RandomNoise, so sampling with it is the unpatched sampling (exact)."""
        comfy, nodes, model, pos, neg = host
        latent = {"samples": torch.zeros(1, 4, 16, 48)}
        noise = nodes["style"].execute(model, noise_seed=11, window_width=1024, window_height=1024, alpha=0.0,
                                       reference="seeded").result[0]
        assert torch.equal(noise.generate_noise(latent), comfy.sample.prepare_noise(latent["samples"], 11))

    def test_panorama_with_latent_fusion(self, host):
        """Style-aligned noise (128 px tiles = 16 latent px on SDXL's factor 8) feeding a latent-fusion panorama."""
        comfy, nodes, model, pos, neg = host
        from vista.core.fusion.style_alignment import style_align_noise

        latent = {"samples": torch.zeros(1, 4, 16, 32)}
        noise_obj = nodes["style"].execute(model, noise_seed=11, window_width=128, window_height=128, alpha=0.4,
                                           reference="canvas crop").result[0]
        noise = noise_obj.generate_noise(latent)
        base = comfy.sample.prepare_noise(latent["samples"], 11)
        assert torch.allclose(noise, style_align_noise(base, base[..., :16, :16], 16, 16, 0.4))
        out = sample_custom(comfy, model, fusion(nodes, 128, 128), pos, neg, 16, 32, steps=1, noise=noise)
        assert torch.isfinite(out).all()


class TestMADSDXL:
    def mad(self, nodes, model, tau=1.0):
        return nodes["mad"].execute(model, tau=tau, input_blocks=True, middle_block=True, output_blocks=True).result[0]

    def test_patches_every_layer_of_deep_stacks(self, host):
        """SDXL stacks several BasicTransformerBlocks per SpatialTransformer (depth 2 here, 10 in SDXL): MAD's
        replace patches, keyed (block, index) without a transformer index, reach every one of them."""
        comfy, nodes, model, pos, neg = host
        from comfy.ldm.modules.attention import SpatialTransformer
        from vista.nodes.mad import transformer_blocks

        patched = self.mad(nodes, tiled(nodes, model, 128, 64, window_batch_size=1))
        seen = set()
        replaces = patched.model_options["transformer_options"]["patches_replace"]
        counting = patched.clone()
        for kind in ("attn1", "attn2"):
            for key, patch in replaces[kind].items():
                def count(q, k, v, extra, patch=patch, kind=kind):
                    seen.add((kind, *extra["block"], extra["block_index"]))
                    return patch(q, k, v, extra)
                (counting.set_model_attn1_replace if kind == "attn1" else counting.set_model_attn2_replace)(count, *key)
        out = sample(comfy, counting, pos, neg, 16, 32, steps=1)
        dm = model.get_model_object("diffusion_model")
        groups = {"input": dm.input_blocks, "middle": [dm.middle_block], "output": dm.output_blocks}
        depth = {(name, i): len(next(layer for layer in groups[name][i] if isinstance(layer, SpatialTransformer))
                                .transformer_blocks) for name, i in transformer_blocks(dm, ("input", "middle", "output"))}
        expected = {(kind, name, i, d) for (name, i), n in depth.items() for d in range(n) for kind in ("attn1", "attn2")}
        assert max(depth.values()) == 2 and seen == expected and torch.isfinite(out).all()

    def test_one_window_equals_unpatched(self, host):
        """MAD over one window covering the canvas = the unpatched model (tolerance 1e-5 x max |latent|)."""
        comfy, nodes, model, pos, neg = host
        plain = sample(comfy, model, pos, neg, 16, 32)
        merged = sample(comfy, self.mad(nodes, tiled(nodes, model, 256, 128, window_height=128)), pos, neg, 16, 32)
        print(f"\nSDXL MAD (window = canvas) vs unpatched: relative diff {relative(merged, plain):.1e}")
        assert relative(merged, plain) <= 1e-5

    def test_merges_on_panorama(self, host):
        """Active MAD changes a 3-window wrapped panorama (offsets on SDXL's 32 px UNet grid), finite, on both routes."""
        comfy, nodes, model, pos, neg = host
        base = tiled(nodes, model, 128, 64, wrap_x=True)
        plain, merged = (sample(comfy, m, pos, neg, 16, 32, steps=1) for m in (base, self.mad(nodes, base)))
        assert torch.isfinite(merged).all() and relative(merged, plain) > 1e-4
        fused = sample_custom(comfy, self.mad(nodes, model), fusion(nodes, 128, 64, window_batch_size=1), pos, neg, 16, 32,
                              steps=1)
        assert torch.isfinite(fused).all()


    @pytest.mark.parametrize("route", ["tiled", "fusion"])
    def test_canvas_off_the_unet_grid_refused(self, host, route):
        """Issue [H] 3, the reported case: 1024 px windows at stride 256 px on a 2072x1024 px canvas. The last window
        starts at 131 latent px, off SDXL's 32 px grid, and its merged tokens used to land up to 1 latent px away
        (65.5 tokens at the 1/2 block merged at 66), silently. Refused, naming the nearest sizes, before the network
        runs."""
        comfy, nodes, model, pos, neg = host
        patched, blocks = model.clone(), []
        patched.set_model_input_block_patch(lambda h, options: blocks.append(1) or h)
        node = "Vista Tiled Diffusion" if route == "tiled" else "Vista Latent Fusion Sampler"
        message = (rf"^{node}: a Vista MAD patch needs every window on the 32 px grid, but on this 2072x1024 px canvas "
                   r"\(259x128 latent px\) the last 1024 px window starts at x = 1048 px, off it, .* Make the latent "
                   r"2048 or 2080 px wide \(window_width 1024 px \+ a multiple of 32 px\)")
        with pytest.raises(ValueError, match=message):
            if route == "tiled":
                sample(comfy, self.mad(nodes, tiled(nodes, patched, 1024, 256)), pos, neg, 128, 259, steps=1)
            else:
                sample_custom(comfy, self.mad(nodes, patched), fusion(nodes, 1024, 256), pos, neg, 128, 259, steps=1)
        assert blocks == []


class TestZoomSDXL:
    """Vista Zoom Settings → (per-level CONDITIONING, stacked as Vista Zoom Prompts stacks it) → Zoom Noise → Zoom Stack
    Sampler, on SDXL. Zoom Prompts itself needs a CLIP; its stacking (stack_conditioning) is fed per-level SDXL
    conditionings built directly, so the stacked pooled (N, 1280) vectors reach SDXL's y per level."""

    def stack(self, levels, size=16, eta=1.0, steps=2, record=False):
        comfy, nodes, model, pos, neg = self.host
        from vista.nodes import zoom
        from vista.nodes.zoom_sampling import stack_conditioning

        settings, _ = zoom.VistaZoomSettings.execute("2", levels).result
        positive = stack_conditioning([sdxl_conditioning(10 + i) for i in range(levels)])
        sampler = zoom.VistaZoomStackSampler.execute(settings, eta, 1.0, 5, 0.1, 0.8).result[0]
        noise = zoom.VistaZoomNoise.execute(settings, 3).result[0]
        latent = torch.zeros(levels, 4, size, size)
        target, calls = recording(model) if record else (model, None)
        guider = comfy.samplers.CFGGuider(target)
        guider.set_conds(positive, neg)
        guider.set_cfg(CFG)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
        initial = noise.generate_noise({"samples": latent})
        with torch.inference_mode():
            out = guider.sample(initial, latent, sampler, sigmas, disable_pbar=True, seed=3)
        return out, initial, positive, calls

    @pytest.fixture(autouse=True)
    def _host(self, host):
        self.host = host

    def test_one_level_eta0_equals_stock_euler(self, host):
        """A 1-level stack at eta 0 is plain sampling: = stock euler from the same noise (1e-5 x max |latent|)."""
        comfy, nodes, model, pos, neg = host
        out, initial, positive, _ = self.stack(1, eta=0.0)
        euler = sample_custom(comfy, model, comfy.samplers.sampler_object("euler"), positive, neg, 16, 16, noise=initial)
        print(f"\nSDXL zoom (1 level, eta 0) vs stock euler: relative diff {relative(out, euler):.1e}")
        assert relative(out, euler) <= 1e-5

    def test_stack_on_sdxl(self, host):
        """A 3-level stack (eta 1): finite, render-consistent, each level's pooled prompt in its own y row."""
        comfy, nodes, model, pos, neg = host
        from vista.core.zoom.stack import area_down, center_crop

        out, _, positive, calls = self.stack(3, record=True)
        assert out.shape == (3, 4, 16, 16) and torch.isfinite(out).all()
        for i in range(2):
            inner = area_down(out[i + 1 : i + 2], 2)[0]
            assert (inner - center_crop(out[i], 2)).abs().max().item() <= 1e-5 * max(1.0, out.abs().max().item())
        pooled = positive[0][1]["pooled_output"]
        for shape, cond_or_uncond, y in calls:
            block = cond_or_uncond.index(0) * 3
            assert torch.equal(y[block : block + 3, :1280], pooled)
            assert all(told(row)[:2] == [128, 128] for row in y)
