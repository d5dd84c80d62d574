"""Node tier: the Vista zoom nodes inside the real host (COMFYUI_PATH), no server, no mocks.

Stacks are small (4 levels of 32x32 latents = 256 px, 2-3 steps) for 2 shared CPU cores.
The sampling path is SamplerCustomAdvanced's: NOISE.generate_noise → CFGGuider.sample with
the SAMPLER and the model's sigmas.
"""
import pytest
import torch

from host import encode, import_host, load_checkpoint

PROMPTS = "a spiral galaxy\na solar system\na blue planet\na city at night"


@pytest.fixture(scope="module")
def host():
    comfy = import_host()
    from vista.core.zoom import stack as core_zoom
    from vista.nodes import zoom as nodes

    model, clip, vae = load_checkpoint()
    return comfy, nodes, core_zoom, model, clip, vae


_ENCODED = {}  # CLIP on 2 shared CPU cores is slow: encode each text once per session


def settings(nodes, zoom_factor="2", levels=4):
    zoom, levels_out = nodes.VistaZoomSettings.execute(zoom_factor, levels).result
    assert levels_out == levels
    return zoom


def prompts(nodes, clip, text=PROMPTS, zoom=None):
    """Positive CONDITIONING of the prompt lines (settings with levels = the line count unless given)."""
    zoom = zoom or settings(nodes, levels=len([line for line in text.splitlines() if line.strip()]))
    if (id(clip), text) not in _ENCODED:
        _ENCODED[id(clip), text] = nodes.VistaZoomPrompts.execute(zoom, clip, text).result[0]
    return _ENCODED[id(clip), text]


def negative(clip, text=""):
    if (id(clip), "negative", text) not in _ENCODED:
        _ENCODED[id(clip), "negative", text] = encode(clip, text)
    return _ENCODED[id(clip), "negative", text]


def sampler(nodes, zoom, photo=None, **kw):
    args = dict(eta=1.0, s_noise=1.0, photo_steps=5, photo_lr=0.1, photo_until=0.8)
    args.update(kw)
    return nodes.VistaZoomStackSampler.execute(zoom, photo=photo, **args).result[0]


def zoom_noise(nodes, zoom, seed=7):
    return nodes.VistaZoomNoise.execute(zoom, seed).result[0]


def sample(comfy, model, positive, negative, the_sampler, noise, n=4, size=32, steps=3, cfg=5.0, latent=None, callback=None):
    """What SamplerCustomAdvanced does with (noise, CFGGuider, sampler, sigmas, latent), in inference mode as the host."""
    latent = latent or {"samples": torch.zeros(n, 4, size, size)}
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    with torch.inference_mode():
        return guider.sample(noise.generate_noise(latent), latent["samples"], the_sampler, sigmas,
                             denoise_mask=latent.get("noise_mask"), callback=callback, disable_pbar=True, seed=noise.seed)


def assert_render_consistent(core_zoom, stack, p):
    atol = 1e-5 * max(1.0, stack.abs().max().item())  # float32 rounding of the latents' magnitude
    for i in range(stack.shape[0] - 1):
        inner = core_zoom.area_down(stack[i + 1 : i + 2], p)[0]
        assert (inner - core_zoom.center_crop(stack[i], p)).abs().max().item() <= atol, f"level {i + 1} vs {i}"


@pytest.fixture(scope="module")
def text_stack(host):
    """The 4-level text zoom (32x32 latent = 256 px, 3 steps), sampled once: (stack, decoded IMAGE, progress)."""
    comfy, nodes, core_zoom, model, clip, vae = host
    zoom = settings(nodes)
    steps = []
    stack = sample(comfy, model, prompts(nodes, clip), negative(clip), sampler(nodes, zoom), zoom_noise(nodes, zoom),
                   callback=lambda i, x0, x, total: steps.append((i, total)))
    with torch.inference_mode():
        images = vae.decode(stack)
    return stack, images, steps


class TestZoomSettings:
    def test_outputs_settings_and_levels(self, host):
        comfy, nodes, core_zoom, *_ = host
        zoom, levels = nodes.VistaZoomSettings.execute("4", 3).result
        assert zoom == core_zoom.ZoomSettings(4, 3) and levels == 3

    def test_custom_type_on_this_host(self, host):
        """VISTA_ZOOM is a custom io type: the settings output and every consumer's zoom input carry it."""
        comfy, nodes, *_ = host
        schema = nodes.VistaZoomSettings.define_schema()
        assert [o.get_io_type() for o in schema.outputs] == ["VISTA_ZOOM", "INT"]
        for node in (nodes.VistaZoomPrompts, nodes.VistaZoomNoise, nodes.VistaZoomStackSampler,
                     nodes.VistaZoomComposite, nodes.VistaZoomVideo):
            inputs = {i.id: i.get_io_type() for i in node.define_schema().inputs}
            assert inputs["zoom"] == "VISTA_ZOOM" and "zoom_factor" not in inputs, node.__name__

    def test_settings_node_is_the_only_zoom_factor(self, host):
        """One source of truth: only Vista Zoom Settings has a zoom_factor or levels widget."""
        comfy, nodes, *_ = host
        for node in (nodes.VistaZoomPrompts, nodes.VistaZoomNoise, nodes.VistaZoomStackSampler,
                     nodes.VistaZoomComposite, nodes.VistaZoomVideo):
            ids = {i.id for i in node.define_schema().inputs}
            assert not ids & {"zoom_factor", "levels"}, node.__name__


class TestZoomPrompts:
    def test_stacks_one_prompt_per_level(self, host):
        comfy, nodes, _, model, clip, vae = host
        (cond, extra), = prompts(nodes, clip, "\n  a galaxy \n\na planet\n")
        assert cond.shape == (2, 77, 768) and extra["pooled_output"].shape == (2, 768)
        for i, text in enumerate(("a galaxy", "a planet")):
            assert torch.equal(cond[i], negative(clip, text)[0][0][0])

    def test_long_prompt_repeated_to_common_length(self, host):
        comfy, nodes, _, model, clip, vae = host
        long = " ".join(["a very detailed spiral galaxy"] * 20)  # > 77 tokens: two CLIP chunks
        (cond, _), = prompts(nodes, clip, f"{long}\na planet")
        alone = negative(clip, "a planet")[0][0][0]
        assert cond.shape == (2, 154, 768)
        assert torch.equal(cond[1], alone.repeat(2, 1)[None][0])

    def test_prompt_count_must_be_levels(self, host):
        comfy, nodes, _, model, clip, vae = host
        with pytest.raises(ValueError, match="Vista Zoom Prompts: prompts has 3 non-blank lines but the zoom "
                                             "settings have levels=4; write one prompt line per zoom level"):
            nodes.VistaZoomPrompts.execute(settings(nodes), clip, "a galaxy\na planet\na city")

    def test_blank_prompts_named_as_blank(self, host):
        comfy, nodes, _, model, clip, vae = host
        with pytest.raises(ValueError, match=r"Vista Zoom Prompts: prompts is blank; write one prompt per line, one "
                                             r"line per zoom level \(levels=4 lines\)"):
            nodes.VistaZoomPrompts.execute(settings(nodes), clip, " \n\n")


class TestZoomNoise:
    def test_deterministic_per_seed_and_zoom_consistent(self, host):
        comfy, nodes, core_zoom, *_ = host
        zoom, latent = settings(nodes), {"samples": torch.zeros(4, 4, 32, 32)}
        a = zoom_noise(nodes, zoom, 7).generate_noise(latent)
        assert torch.equal(a, zoom_noise(nodes, zoom, 7).generate_noise(latent))
        assert not torch.allclose(a, zoom_noise(nodes, zoom, 8).generate_noise(latent))
        assert zoom_noise(nodes, zoom, 7).seed == 7
        for i in range(3):  # Π_noise: level i's centre = level i+1 area-downscaled, times p
            inner = 2 * core_zoom.area_down(a[i + 1 : i + 2], 2)[0]
            assert torch.allclose(core_zoom.center_crop(a[i], 2), inner, atol=1e-5)

    def test_size_not_divisible(self, host):
        comfy, nodes, *_ = host
        with pytest.raises(ValueError, match=r"Vista Zoom Noise: latent_image \(SamplerCustomAdvanced\) is 36x36 latent px; "
                                             r"with zoom_factor=4 its width and height must be multiples of "
                                             r"2·zoom_factor = 8 latent px"):
            zoom_noise(nodes, settings(nodes, "4", 2)).generate_noise({"samples": torch.zeros(2, 4, 36, 36)})

    def test_latent_batch_must_be_levels(self, host):
        comfy, nodes, *_ = host
        with pytest.raises(ValueError, match=r"Vista Zoom Noise: the latent \(SamplerCustomAdvanced latent_image\) has "
                                             r"batch 3 but the zoom settings have levels=4; link Vista Zoom Settings' "
                                             r"levels output to the EmptyLatentImage batch_size"):
            zoom_noise(nodes, settings(nodes)).generate_noise({"samples": torch.zeros(3, 4, 32, 32)})

    def test_video_latent_refused(self, host):
        comfy, nodes, *_ = host
        with pytest.raises(ValueError, match=r"Vista Zoom Noise: the latent .* must be an image latent"):
            zoom_noise(nodes, settings(nodes)).generate_noise({"samples": torch.zeros(4, 4, 2, 32, 32)})


class TestZoomStackSampler:
    def test_text_zoom_4_levels_stack(self, host, text_stack):
        """Stack of 4 render-consistent levels, progress per step."""
        comfy, nodes, core_zoom, model, clip, vae = host
        stack, images, steps = text_stack
        assert stack.shape == (4, 4, 32, 32) and torch.isfinite(stack).all()
        assert steps == [(0, 3), (1, 3), (2, 3)]
        assert_render_consistent(core_zoom, stack, 2)

    def test_progress_inside_each_step(self, host):
        """Issue [H] 10: the levels share one batched UNet call per step; the bar moves per UNet block of it (the
        test UNet has 4 input + 4 output blocks = 8 units a step; the step's end is the sampler's own report)."""
        comfy, nodes, _, model, clip, vae = host
        zoom, reports = settings(nodes, levels=2), []
        comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: reports.append((value, total)))
        try:
            sample(comfy, model, prompts(nodes, clip, "a galaxy\na planet"), negative(clip), sampler(nodes, zoom),
                   zoom_noise(nodes, zoom), n=2, size=16, steps=2)
        finally:
            comfy.utils.set_progress_bar_global_hook(None)
        assert reports == [(1, 16), (2, 16), (3, 16), (4, 16), (5, 16), (6, 16), (7, 16),
                           (9, 16), (10, 16), (11, 16), (12, 16), (13, 16), (14, 16), (15, 16)]

    def test_is_a_sampler_that_receives_the_guider(self, host):
        """A comfy.samplers.Sampler subclass handed the guider (no reach into KSamplerX0Inpaint.inner_model)."""
        comfy, nodes, *_ = host
        from pathlib import Path

        the_sampler = sampler(nodes, settings(nodes))
        assert isinstance(the_sampler, comfy.samplers.Sampler)
        assert not isinstance(the_sampler, comfy.samplers.KSAMPLER)
        source = (Path(nodes.__file__).parent / "zoom_sampling.py").read_text()
        assert "inner_model" not in source.replace("inner_model.process_latent_in", "")

    def test_same_seed_same_stack_zoom4(self, host):
        comfy, nodes, core_zoom, model, clip, vae = host
        positive, zoom = prompts(nodes, clip, "a galaxy\na planet"), settings(nodes, "4", 2)
        run = lambda: sample(comfy, model, positive, negative(clip), sampler(nodes, zoom), zoom_noise(nodes, zoom, 3),
                             n=2, size=16, steps=2)
        a = run()
        assert torch.equal(a, run())
        assert_render_consistent(core_zoom, a, 4)

    def test_per_level_prompts_reach_unet_in_one_batch(self, host):
        """Each batch item of the one batched UNet call carries its own level's prompt."""
        comfy, nodes, _, model, clip, vae = host
        calls = []

        def record(apply_model, args):
            calls.append((tuple(args["input"].shape), list(args["cond_or_uncond"]), args["c"]["c_crossattn"].clone()))
            return apply_model(args["input"], args["timestep"], **args["c"])

        patched = model.clone()
        patched.set_model_unet_function_wrapper(record)
        zoom = settings(nodes)
        sample(comfy, patched, prompts(nodes, clip), negative(clip), sampler(nodes, zoom), zoom_noise(nodes, zoom),
               size=16, steps=1)
        (shape, cond_or_uncond, crossattn), = calls  # one call: 4 negatives + 4 positives
        assert shape == (8, 4, 16, 16) and len(cond_or_uncond) == 2
        positives = crossattn[4:] if cond_or_uncond == [1, 0] else crossattn[:4]
        for i, text in enumerate(PROMPTS.splitlines()):
            assert torch.allclose(positives[i], negative(clip, text)[0][0][0])

    def test_prompts_change_their_levels(self, host):
        """Changing only level 1's prompt changes the stack, and not the way changing level 0's does."""
        comfy, nodes, _, model, clip, vae = host
        zoom = settings(nodes, levels=2)
        run = lambda text: sample(comfy, model, prompts(nodes, clip, text), negative(clip),
                                  sampler(nodes, zoom, eta=0.0), zoom_noise(nodes, zoom), n=2, size=16, steps=1)
        base = run("a spiral galaxy\na blue planet")
        deep = run("a spiral galaxy\na red apple on a table") - base
        shallow = run("a red apple on a table\na blue planet") - base
        assert deep.abs().max() > 1e-3 and shallow.abs().max() > 1e-3
        assert not torch.allclose(deep, shallow, atol=1e-3)

    def test_photo_zoom_closer_to_photo(self, host):
        """With the photo loss every level's photo region is closer to the photo."""
        comfy, nodes, core_zoom, model, clip, vae = host
        yy, xx = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 256), indexing="ij")
        image = torch.stack([xx, yy, (xx * 6).sin() * 0.5 + 0.5], dim=-1)[None]
        with torch.inference_mode():
            photo = {"samples": vae.encode(image)}
        positive, zoom = prompts(nodes, clip, "a man on a picnic blanket\na hand\nskin cells"), settings(nodes, levels=3)
        run = lambda photo_in, lr=0.1: sample(comfy, model, positive, negative(clip),
                                              sampler(nodes, zoom, photo=photo_in, photo_lr=lr), zoom_noise(nodes, zoom),
                                              n=3, steps=2)

        def distances(stack):  # ||D_i(L_i) - M_i ξ|| per level, VAEEncode (unprocessed) space
            return [(core_zoom.area_down(stack[i : i + 1], 2**i)[0] - core_zoom.center_crop(photo["samples"][0], 2**i))
                    .square().mean().sqrt().item() for i in range(stack.shape[0])]

        free, guided, strong = distances(run(None)), distances(run(photo)), distances(run(photo, lr=2.0))
        print(f"\nphoto-zoom RMS distance per level (VAEEncode latent units): without loss "
              f"{[round(d, 3) for d in free]}, with loss lr 0.1 {[round(d, 3) for d in guided]}, "
              f"lr 2.0 {[round(d, 3) for d in strong]}")
        assert all(s < g for s, g in zip(strong, guided))  # a larger step pulls harder
        # Paper settings (5 Adam steps, lr 0.1): Adam moves each value by about lr per step, while this
        # random-weight UNet's x0 estimates lie ~80 latent units from the photo, so the gain is modest
        # but present at every level (a real model's estimates are within a few units).
        assert all(g < 0.95 * f for g, f in zip(guided, free))

    def test_photo_latent_in_sampling_space(self, host):
        """The VAEEncode photo is converted exactly as the host converts latent_image (process_latent_in)."""
        comfy, nodes, _, model, clip, vae = host
        from vista.nodes.zoom_sampling import photo_zoom

        photo = {"samples": torch.randn(1, 4, 16, 16)}
        guidance = photo_zoom(comfy.samplers.CFGGuider(model), photo, torch.zeros(2, 4, 16, 16), 8,
                              {"steps": 5, "lr": 0.1, "until": 0.8})
        assert torch.allclose(guidance.photo, model.model.process_latent_in(photo["samples"])[0])
        assert not torch.allclose(guidance.photo, photo["samples"][0])  # SD1.5: scaled by 0.18215

    def test_interrupt(self, host):
        comfy, nodes, _, model, clip, vae = host
        zoom = settings(nodes, levels=2)
        comfy.model_management.interrupt_current_processing(True)
        try:
            with pytest.raises(comfy.model_management.InterruptProcessingException):
                sample(comfy, model, prompts(nodes, clip, "a galaxy\na planet"), negative(clip), sampler(nodes, zoom),
                       zoom_noise(nodes, zoom), n=2, steps=2)
        finally:
            comfy.model_management.interrupt_current_processing(False)

    @pytest.mark.parametrize("case, match", [
        ("fewer_prompts", "positive conditioning has 3 zoom prompts but latent_image has batch 4"),
        ("levels", r"latent_image has batch 2 but the zoom settings have levels=4; link Vista Zoom Settings' "
                   r"levels output to the EmptyLatentImage batch_size"),
        ("size", r"latent_image is 36x36 latent px \(288x288 px\); with zoom_factor=4 width and height must be "
                 r"multiples of 2·zoom_factor = 8 latent px \(64 px\)"),
        ("photo_size", r"photo must be one VAE-encoded image of the zoom level size 32x32 latent px \(256x256 px\)"),
        ("photo_rank", r"photo must be an image latent of shape \(batch, channels, height, width\)"),
        ("noise_mask", "latent_image has a noise_mask"),
        ("video_latent", r"latent_image must be an image latent of shape \(batch, channels, height, width\)"),
    ])
    def test_validation_errors(self, host, case, match):
        comfy, nodes, _, model, clip, vae = host
        text = {"fewer_prompts": "\n".join(PROMPTS.splitlines()[:3])}.get(case, PROMPTS)
        n = {"levels": 2}.get(case, 4)
        size, p = (36, "4") if case == "size" else (32, "2")
        latent = {"samples": torch.zeros(n, 4, size, size) if case != "video_latent" else torch.zeros(n, 4, 2, 8, 8)}
        if case == "noise_mask":
            latent["noise_mask"] = torch.ones(n, 1, size, size)
        photo = {"photo_size": {"samples": torch.zeros(1, 4, 16, 16)},
                 "photo_rank": {"samples": torch.zeros(1, 4, 1, 32, 32)}}.get(case)
        from comfy_extras.nodes_custom_sampler import Noise_RandomNoise  # stock noise: the sampler must catch sizes

        with pytest.raises(ValueError, match=f"Vista Zoom Stack Sampler: .*{match}"):
            sample(comfy, model, prompts(nodes, clip, text, zoom=settings(nodes, levels=len(text.splitlines()))),
                   negative(clip), sampler(nodes, settings(nodes, p), photo=photo), Noise_RandomNoise(1), steps=1,
                   latent=latent)

    @pytest.mark.parametrize("noise_p, sampler_p", [("2", "4"), ("4", "2")])
    def test_noise_of_another_zoom_factor_refused(self, host, noise_p, sampler_p):
        """Issue [R] 12: noise drawn for p=2 fed to a p=4 sampler (two Settings nodes) is an error, not a wrong stack."""
        comfy, nodes, _, model, clip, vae = host
        positive = prompts(nodes, clip, "a galaxy\na planet\na city", zoom=settings(nodes, levels=3))
        with pytest.raises(ValueError, match=f"Vista Zoom Stack Sampler: the noise input of SamplerCustomAdvanced: "
                                             f"noise is not zoom-consistent for zoom factor p={sampler_p}.*Connect "
                                             f"Vista Zoom Noise fed by the same Vista Zoom Settings"):
            sample(comfy, model, positive, negative(clip), sampler(nodes, settings(nodes, sampler_p, 3)),
                   zoom_noise(nodes, settings(nodes, noise_p, 3)), n=3, size=32, steps=1)

    def test_stock_noise_refused(self, host):
        comfy, nodes, _, model, clip, vae = host
        from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

        zoom = settings(nodes, levels=2)
        with pytest.raises(ValueError, match="noise is not zoom-consistent for zoom factor p=2"):
            sample(comfy, model, prompts(nodes, clip, "a galaxy\na planet"), negative(clip), sampler(nodes, zoom),
                   Noise_RandomNoise(1), n=2, size=16, steps=1)

    @pytest.mark.parametrize("eta", [1.0, 0.0])
    def test_flow_matching_model(self, host, eta):
        """Issue [M]: a CONST (SD3/Flux-style) model samples with eta > 0 (RF step) and with eta 0."""
        comfy, nodes, _, model, clip, vae = host
        from comfy_extras.nodes_model_advanced import ModelSamplingSD3

        flow = ModelSamplingSD3().patch(model, 3.0)[0]  # the host's own node: model_sampling CONST
        zoom, positive = settings(nodes, levels=2), prompts(nodes, clip, "a galaxy\na planet")
        out = sample(comfy, flow, positive, negative(clip), sampler(nodes, zoom, eta=eta), zoom_noise(nodes, zoom),
                     n=2, size=16, steps=2)
        assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()


def prompt_graph(video_zoom="2", composite_zoom="2", sampler_zoom="2", video_feather=16):
    """The API prompt of a zoom stack whose Composite and Video may each take another Vista Zoom Settings node
    ("2" = the sampler's settings node #1; "4" = a second node #2 with zoom_factor 4): what the host hands a node
    as its hidden PROMPT input."""
    ids = {"2": "1", "4": "2"}
    return {
        "1": {"class_type": "VistaZoomSettings", "inputs": {"zoom_factor": "2", "levels": 4}},
        "2": {"class_type": "VistaZoomSettings", "inputs": {"zoom_factor": "4", "levels": 4}},
        "3": {"class_type": "VistaZoomStackSampler", "inputs": {"zoom": [ids[sampler_zoom], 0], "eta": 1.0}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256, "batch_size": ["1", 1]}},
        "5": {"class_type": "SamplerCustomAdvanced", "inputs": {"sampler": ["3", 0], "latent_image": ["4", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 2]}},
        "7": {"class_type": "VistaZoomComposite", "inputs": {"images": ["6", 0], "zoom": [ids[composite_zoom], 0],
                                                             "feather": 16}},
        "8": {"class_type": "VistaZoomVideo", "inputs": {"images": ["7", 0], "zoom": [ids[video_zoom], 0],
                                                         "frames_per_level": 2, "feather": video_feather}},
        "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}},
    }


class TestStackSettingsLinks:
    """Issue [H] 8: Composite and Video compare their zoom with the settings node that made their images (followed
    through the prompt the host hands them: hidden PROMPT and UNIQUE_ID)."""

    def queued(self, node, prompt, node_id):
        """The node class as the host's executor prepares it (v0.3.64 takes the hidden inputs, v0.33.0 its V3 data)."""
        import inspect

        from comfy_api.latest import io

        hidden = {io.Hidden.prompt: prompt, io.Hidden.unique_id: node_id}
        v3_data = "v3_data" in inspect.signature(node.PREPARE_CLASS_CLONE).parameters
        return node.PREPARE_CLASS_CLONE({"hidden_inputs": hidden} if v3_data else hidden)

    def test_video_of_another_settings_node_refused(self, host):
        comfy, nodes, *_ = host
        video = self.queued(nodes.VistaZoomVideo, prompt_graph(video_zoom="4"), "8")
        with pytest.raises(ValueError, match=r"^Vista Zoom Video: zoom is zoom_factor=4, levels=4 \(Vista Zoom "
                                             r"Settings node #2\) but the images were made with zoom_factor=2, "
                                             r"levels=4 \(Vista Zoom Settings node #1, via node #7\); link that same "
                                             r"Vista Zoom Settings node to this node's zoom input"):
            video.execute(torch.rand(4, 128, 128, 3), settings(nodes, "4"), 2, 8)

    def test_composite_of_another_settings_node_refused(self, host):
        comfy, nodes, *_ = host
        composite = self.queued(nodes.VistaZoomComposite, prompt_graph(composite_zoom="4"), "7")
        with pytest.raises(ValueError, match=r"^Vista Zoom Composite: zoom is zoom_factor=4, levels=4 .* made with "
                                             r"zoom_factor=2, levels=4 \(Vista Zoom Settings node #1, via node #3\)"):
            composite.execute(torch.rand(4, 128, 128, 3), settings(nodes, "4"), 8)

    def test_same_settings_node_runs(self, host, caplog):
        comfy, nodes, *_ = host
        video = self.queued(nodes.VistaZoomVideo, prompt_graph(), "8")
        with caplog.at_level("WARNING"):
            frames = video.execute(torch.rand(4, 128, 128, 3), settings(nodes), 2, 16).result[0]
        assert frames.shape == (7, 128, 128, 3) and "Vista Zoom" not in caplog.text

    def test_other_feather_than_the_composite_warns(self, host, caplog):
        comfy, nodes, *_ = host
        video = self.queued(nodes.VistaZoomVideo, prompt_graph(video_feather=8), "8")
        with caplog.at_level("WARNING"):
            video.execute(torch.rand(4, 128, 128, 3), settings(nodes), 2, 8)
        assert ("Vista Zoom Video: feather=8 px but the images were composited with feather=16 px (Vista Zoom "
                "Composite node #7); use the same value on both") in caplog.text


class TestZoomComposite:
    def test_consistent_in_pixels(self, host, text_stack):
        """After compositing, each level's centre (beyond the feather ring) IS the next level area-downscaled."""
        comfy, nodes, core_zoom, model, clip, vae = host
        stack, images, _ = text_stack
        out = nodes.VistaZoomComposite.execute(images, settings(nodes), 8).result[0]
        assert out.shape == images.shape
        chw = out.permute(0, 3, 1, 2)
        for i in range(3):
            inner = core_zoom.area_down(chw[i + 1 : i + 2], 2)[0]
            block = core_zoom.center_crop(chw[i], 2)
            assert torch.allclose(inner[:, 8:-8, 8:-8], block[:, 8:-8, 8:-8], atol=1e-6)
            raw = core_zoom.center_crop(images[i].permute(2, 0, 1), 2)
            assert not torch.allclose(inner, raw, atol=1e-2)  # the decoded levels alone disagree

    def test_seams_and_switches_on_decoded_levels(self, host, text_stack):
        """Issue [R] 11, measured on the test checkpoint's decoded levels (bench/zoom_seams.py prints the same)."""
        comfy, nodes, core_zoom, *_ = host
        from vista.bench.evaluation.zoom_metrics import seam_ratio, source_levels, switch_jump_ratio

        _, images, _ = text_stack
        zoom, feather, fpl = settings(nodes), 8, 6
        hard = nodes.VistaZoomComposite.execute(images, zoom, 0).result[0].permute(0, 3, 1, 2)
        soft = nodes.VistaZoomComposite.execute(images, zoom, feather).result[0]
        seams = [(seam_ratio(hard[i], 2, feather), seam_ratio(soft[i].permute(2, 0, 1), 2, feather)) for i in range(3)]
        sources = source_levels(4, 2, fpl, *images.shape[1:3])
        before = switch_jump_ratio(nodes.VistaZoomVideo.execute(images, zoom, fpl, 0).result[0], sources)
        after = switch_jump_ratio(nodes.VistaZoomVideo.execute(soft, zoom, fpl, feather).result[0], sources)
        print(f"\nseam ratio per level (hard paste, feathered {feather} px): {[tuple(round(v, 3) for v in s) for s in seams]}"
              f"\nvideo switch-jump ratio: before {before:.3f}, after {after:.3f}")
        assert all(soft_ratio < hard_ratio for hard_ratio, soft_ratio in seams)
        assert after < before

    def test_image_batch_must_be_levels(self, host):
        comfy, nodes, *_ = host
        with pytest.raises(ValueError, match=r"Vista Zoom Composite: images has batch 3 but the zoom settings have "
                                             r"levels=4; decode the whole stack"):
            nodes.VistaZoomComposite.execute(torch.rand(3, 64, 64, 3), settings(nodes), 4)

    def test_feather_too_wide(self, host):
        comfy, nodes, *_ = host
        with pytest.raises(ValueError, match=r"Vista Zoom Composite: feather=17 px must be in \[0, 16\] px for "
                                             r"128x128 px levels with zoom factor p=2"):
            nodes.VistaZoomComposite.execute(torch.rand(2, 128, 128, 3), settings(nodes, levels=2), 17)

    def test_size_not_divisible(self, host):
        comfy, nodes, *_ = host
        with pytest.raises(ValueError, match=r"Vista Zoom Composite: images height and width must be divisible by "
                                             r"2·p = 8 \(px\)"):
            nodes.VistaZoomComposite.execute(torch.rand(2, 36, 36, 3), settings(nodes, "4", 2), 0)


class TestZoomVideo:
    def test_frames_from_composited_levels(self, host, text_stack):
        comfy, nodes, *_ = host
        _, images, _ = text_stack
        zoom = settings(nodes)
        composited = nodes.VistaZoomComposite.execute(images, zoom, 8).result[0]
        frames = nodes.VistaZoomVideo.execute(composited, zoom, 3, 8).result[0]
        assert frames.shape == (3 * 3 + 1, *images.shape[1:])
        for k in range(4):  # whole-level frames: the composited level, except the feather rings (faded twice)
            diff = (frames[3 * k] - composited[k]).abs().amax(-1)
            assert (diff < 1e-4).float().mean() > 0.8 and diff.mean() < 0.02
            assert diff[:60].max() < 1e-4 and diff[72:92, 72:92].max() < 1e-4  # outside / inside level k+1's ring
        assert torch.allclose(frames[-1], composited[-1], atol=1e-6)

    def test_frame_count(self, host):
        comfy, nodes, *_ = host
        frames = nodes.VistaZoomVideo.execute(torch.rand(3, 32, 48, 3), settings(nodes, "4", 3), 5, 0).result[0]
        assert frames.shape == (11, 32, 48, 3)

    def test_image_batch_must_be_levels(self, host):
        comfy, nodes, *_ = host
        with pytest.raises(ValueError, match=r"Vista Zoom Video: images has batch 2 but the zoom settings have "
                                             r"levels=4; decode the whole stack"):
            nodes.VistaZoomVideo.execute(torch.rand(2, 32, 32, 3), settings(nodes), 4, 0)

    def test_frames_per_level_below_one(self, host):
        comfy, nodes, *_ = host
        with pytest.raises(ValueError, match="Vista Zoom Video: frames_per_level must be >= 1, got 0"):
            nodes.VistaZoomVideo.execute(torch.rand(2, 32, 32, 3), settings(nodes, levels=2), 0, 0)

    def test_feather_too_wide(self, host):
        comfy, nodes, *_ = host
        with pytest.raises(ValueError, match=r"Vista Zoom Video: feather=9 px must be in \[0, 8\] px"):
            nodes.VistaZoomVideo.execute(torch.rand(2, 64, 64, 3), settings(nodes, levels=2), 2, 9)
