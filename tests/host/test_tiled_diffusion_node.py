"""Node tier: Vista Tiled Diffusion inside the real host (COMFYUI_PATH), no server."""
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


def patch(node, model, **kw):
    args = dict(window_width=512, window_height=512, stride_x=128, stride_y=128, weight_mode="uniform",
                wrap_x=False, window_batch_size=4)
    args.update(kw)
    return node.execute(model, **args).result[0]


class TestTiledDiffusionNode:
    def test_window_equals_canvas_matches_unpatched(self, host):
        """One window covering the canvas = the unpatched KSampler, same seed (tolerance 1e-4)."""
        comfy, node, model, pos, neg = host
        plain = sample(comfy, model, pos, neg, 32, 32)
        tiled = sample(comfy, patch(node, model, window_width=256, window_height=256), pos, neg, 32, 32)
        assert (tiled - plain).abs().max().item() <= 1e-4

    @pytest.mark.parametrize("weight_mode, sampler", [("uniform", "dpmpp_2m"), ("gaussian", "euler_ancestral"),
                                                      ("guided", "heun")])
    def test_panorama_any_sampler(self, host, weight_mode, sampler):
        comfy, node, model, pos, neg = host
        out = sample(comfy, patch(node, model, window_width=256, window_height=256, stride_x=64,
                                  weight_mode=weight_mode, wrap_x=weight_mode == "guided"), pos, neg, 32, 80, steps=2,
                     sampler=sampler)
        assert out.shape == (1, 4, 32, 80) and torch.isfinite(out).all()

    def test_input_model_not_modified(self, host):
        comfy, node, model, pos, neg = host
        patch(node, model)
        assert "model_function_wrapper" not in model.model_options

    def test_chains_existing_wrapper(self, host):
        comfy, node, model, pos, neg = host
        seen = []
        inner = model.clone()

        def previous(apply_model, args):
            seen.append(tuple(args["input"].shape))
            return apply_model(args["input"], args["timestep"], **args["c"])

        inner.set_model_unet_function_wrapper(previous)
        sample(comfy, patch(node, inner, window_width=256, window_height=256, stride_x=128), pos, neg, 32, 64, steps=1)
        assert seen and all(s[-2:] == (32, 32) for s in seen)

    def test_window_larger_than_canvas_is_clamped_with_warning(self, host, caplog):
        """A window wider than the image/area (area conditioning crops the model input) is clamped
        to it with a warning naming the input; the result is the plain sampler's (tolerance 1e-4)."""
        comfy, node, model, pos, neg = host
        plain = sample(comfy, model, pos, neg, 32, 16, steps=1)
        with caplog.at_level("WARNING"):
            tiled = sample(comfy, patch(node, model), pos, neg, 32, 16, steps=1)
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
        out = comfy.sample.sample(patch(node, model, window_width=256, window_height=256), noise, 2, 5.0, "euler",
                                  "normal", pos + area, neg, latent, noise_mask=mask, disable_pbar=True, seed=1)
        assert torch.isfinite(out).all()
        assert (out[..., :8] - latent[..., :8]).abs().max().item() <= 1e-4  # unmasked columns keep the source

    def test_size_not_multiple_of_factor(self, host):
        comfy, node, model, pos, neg = host
        with pytest.raises(ValueError, match="stride_x=100 px must be a positive multiple of 8"):
            patch(node, model, stride_x=100)

    @pytest.mark.parametrize("kw, match", [(dict(stride_x=600), "stride_x=600 px must be in"),
                                           (dict(window_height=32), "window_height=32 px must be in")])
    def test_validate_inputs(self, host, kw, match):
        _, node, *_ = host
        args = dict(window_width=512, window_height=512, stride_x=128, stride_y=128)
        args.update(kw)
        assert match in node.validate_inputs(**args)
