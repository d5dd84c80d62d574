"""Node tier: ControlNet residuals reach every window cropped per UNet block (real host, random ControlNet)."""
import functools

import pytest
import torch

from host import _tool, encode, import_host, load_checkpoint


@functools.lru_cache(maxsize=None)
def random_controlnet():
    """A ControlNet for the slim test UNet, built from the host's own class with seeded weights."""
    comfy = import_host()
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops

    tool = _tool()
    config = {k: v for k, v in tool.UNET_CONFIG.items() if k != "out_channels"}
    net = comfy.cldm.cldm.ControlNet(**config, hint_channels=3, device="cpu", operations=comfy.ops.disable_weight_init)
    sd = tool._randomised_state_dict(net, "", torch.Generator().manual_seed(5))
    return comfy.controlnet.load_controlnet_state_dict({k: v.float() for k, v in sd.items()})


@pytest.fixture(scope="module")
def host():
    comfy = import_host()
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    model, clip, _ = load_checkpoint()
    return comfy, VistaTiledDiffusion, model, encode(clip, "a street"), encode(clip, "")


def with_control(conditioning, height_px, width_px):
    hint = torch.linspace(0, 1, width_px).expand(1, 3, height_px, width_px).contiguous()
    control = random_controlnet().copy().set_cond_hint(hint, 1.0, (0.0, 1.0))
    return [[t, {**d, "control": control}] for t, d in conditioning]


def sample(comfy, model, positive, negative, height, width, seed=4):
    latent = torch.zeros(1, 4, height, width)
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, seed), 2, 5.0, "euler", "normal",
                               positive, negative, latent, disable_pbar=True, seed=seed)


def tiled(node, model, window_px, stride_px):
    return node.execute(model, window_width=window_px, window_height=window_px, stride_x=stride_px,
                        stride_y=stride_px, weight_mode="uniform", wrap_x=False, window_batch_size=2).result[0]


class TestControlNetThroughWindows:
    def test_window_equals_canvas_matches_unpatched(self, host):
        """One window = the canvas: patched + ControlNet = unpatched + ControlNet (tolerance 1e-4)."""
        comfy, node, model, pos, neg = host
        pos_c, neg_c = with_control(pos, 256, 256), with_control(neg, 256, 256)
        plain = sample(comfy, model, pos_c, neg_c, 32, 32)
        patched = sample(comfy, tiled(node, model, 256, 64), pos_c, neg_c, 32, 32)
        assert (patched - plain).abs().max().item() <= 1e-4

    def test_panorama_windows_get_cropped_residuals(self, host):
        """Several windows: residuals are cropped per block (a mis-crop would fail on shapes) and
        the hint changes the result."""
        comfy, node, model, pos, neg = host
        patched = tiled(node, model, 256, 128)
        with_hint = sample(comfy, patched, with_control(pos, 256, 512), with_control(neg, 256, 512), 32, 64)
        without = sample(comfy, patched, pos, neg, 32, 64)
        assert torch.isfinite(with_hint).all() and (with_hint - without).abs().max().item() > 1e-3


@pytest.fixture(scope="module")
def deep():
    comfy = import_host()
    from host import deep_controlnet, deep_unet_model
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    _, clip, _ = load_checkpoint()
    return comfy, VistaTiledDiffusion, deep_unet_model(), deep_controlnet(), encode(clip, "a street"), encode(clip, "")


def with_hint(controlnet, conditionings, height, width):
    """Both conditionings with one ControlNet hint of a ``height x width`` latent canvas."""
    hint = torch.linspace(0, 1, width * 8).expand(1, 3, height * 8, width * 8).contiguous()
    control = controlnet.copy().set_cond_hint(hint, 1.0, (0.0, 1.0))
    return [[[t, {**d, "control": control}] for t, d in c] for c in conditionings]


class TestDeepUNetHeights:
    """Issue [R] 2.1: at latent heights 65–67, 73, 74, 81, 82, 89, 97 (520–776 px) the scale of the deepest
    residuals (8) was derived as 7, the crops did not fit, and ComfyUI dropped them with only a log warning.
    Real ControlNet forwards through Vista Tiled Diffusion on a 4-level UNet (scales 1…8, like SD1.5): windows as
    high as the canvas (one row at y = 0, on the grid; issue [H] 3 refuses rows off it) and 512 px wide at stride
    256 px on a 768 px wide canvas (two columns)."""

    @pytest.mark.parametrize("height", [65, 66, 67, 73, 74, 81, 82, 89, 97])
    def test_residuals_applied_at_every_block(self, deep, height, caplog):
        comfy, node, model, controlnet, pos, neg = deep
        patched = node.execute(model, window_width=512, window_height=height * 8, stride_x=256, stride_y=256,
                               weight_mode="uniform", wrap_x=False, window_batch_size=2).result[0]
        with caplog.at_level("WARNING"):
            hinted = sample(comfy, patched, *with_hint(controlnet, (pos, neg), height, 96), height, 96)
        assert "control could not be applied" not in caplog.text
        without = sample(comfy, patched, pos, neg, height, 96)
        assert torch.isfinite(hinted).all() and (hinted - without).abs().max().item() > 1e-4


class TestOffGridCanvas:
    """Issue [H] 3: ControlNet residuals are cropped per window at their block's scale; a window whose offset is off
    the deepest block's grid (the last row of 512 px windows on a 520 px high canvas starts at y = 8 px, 1/8 of a
    token at scale 8) used to get its residuals a rounded position away, silently. Refused, naming the canvas and
    the nearest heights that work, before the network runs; those heights run with the hint applied."""

    def test_refused_naming_the_nearest_heights(self, deep):
        comfy, node, model, controlnet, pos, neg = deep
        patched, blocks = tiled(node, model, 512, 256).clone(), []
        patched.set_model_input_block_patch(lambda h, options: blocks.append(1) or h)
        message = (r"^Vista Tiled Diffusion: ControlNet residuals needs every window on the 64 px grid, but on this "
                   r"512x520 px canvas \(64x65 latent px\) the last 512 px window starts at y = 8 px, off it, so "
                   r"ControlNet residuals could only be applied there at a rounded position\. Make the latent 512 or "
                   r"576 px high \(window_height 512 px \+ a multiple of 64 px\), or change window_height")
        with pytest.raises(ValueError, match=message):
            sample(comfy, patched, *with_hint(controlnet, (pos, neg), 65, 64), 65, 64)
        assert blocks == []

    def test_without_controlnet_the_size_runs(self, deep):
        """The grid is needed only for the residuals: the same canvas without a hint samples as before."""
        comfy, node, model, controlnet, pos, neg = deep
        out = sample(comfy, tiled(node, model, 512, 256), pos, neg, 65, 64)
        assert out.shape == (1, 4, 65, 64) and torch.isfinite(out).all()

    def test_nearest_height_runs(self, deep):
        comfy, node, model, controlnet, pos, neg = deep
        patched = tiled(node, model, 512, 256)
        hinted = sample(comfy, patched, *with_hint(controlnet, (pos, neg), 72, 64), 72, 64)
        without = sample(comfy, patched, pos, neg, 72, 64)
        assert torch.isfinite(hinted).all() and (hinted - without).abs().max().item() > 1e-4
