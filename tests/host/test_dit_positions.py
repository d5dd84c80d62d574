"""Node tier: positions = window | canvas on DiTs (issue [T] item 1), inside the real host (COMFYUI_PATH).

Flux (tests/support/host.py ``tiny_flux``, on both hosts): the positions each window row receives are read where the
host builds its rotary embedding — a ``post_input`` patch on the model, which the host calls after Vista's per-call
one, records the ``img_ids`` it is handed — and must equal the window's canvas offset in patches; one window covering
the canvas is the unpatched model with both settings (tolerance 1e-5 × max |latent|); a multi-window canvas differs
between the settings (Flux's text ids sit at 0, so image↔text offsets change). SD3 (learned, cropped position
embedding) and the SD1.5 UNet are refused with their reason.
"""
import pytest
import torch

from host import dit_conditioning, import_host, load_checkpoint, tiny_flux, tiny_sd3
from test_flux_sd3_nodes import CFG, relative
from test_flux_sd3_nodes import sample as sample_dit


@pytest.fixture(scope="module")
def comfy():
    return import_host()


@pytest.fixture(scope="module")
def flux():
    model, _ = tiny_flux()
    return model, dit_conditioning("flux", 1), dit_conditioning("flux", 2)


def tiled(model, positions, window=256, stride=128, batch=4, wrap=False):
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    return VistaTiledDiffusion.execute(model, window_width=window, window_height=window, stride_x=stride, stride_y=stride,
                                       weight_mode="uniform", wrap_x=wrap, window_batch_size=batch,
                                       positions=positions).result[0]


def fusion(positions, window=256, stride=128, batch=4, eta=0.0):
    from vista.nodes.latent_fusion import VistaLatentFusionSampler

    return VistaLatentFusionSampler.execute(window_width=window, window_height=window, stride_x=stride, stride_y=stride,
                                            weight_mode="guided", wrap_x=False, window_batch_size=batch, eta=eta,
                                            s_noise=1.0, variance_corrected=True, positions=positions).result[0]


def sample(comfy, model, sampler, positive, negative, height, width, steps=2, cfg=CFG["flux"]):
    """test_flux_sd3_nodes' SamplerCustomAdvanced path (CFGGuider, "simple" sigmas, 16-channel latent)."""
    return sample_dit(comfy, model, sampler, positive, negative, cfg, height, width, steps=steps)


class Recorded:
    """What a recording ``post_input`` patch saw: per model call, the image and text ids the host handed it."""

    def __init__(self):
        self.calls = []


def recorded(model):
    """(record, model + a ``post_input`` patch that records the ids it is handed — after Vista's per-call patch —
    and changes nothing). A function, not an object: v0.3.64's ``ModelPatcher.clone`` deep-copies patch objects, and
    a deep copy of a function is the function itself, so the record stays shared."""
    record = Recorded()

    def recorder(args):
        record.calls.append((args["img_ids"].detach().clone(), args["txt_ids"].detach().clone()))
        return args

    model = model.clone()
    model.set_model_post_input_patch(recorder)
    return record, model


class TestTiledDiffusion:
    @pytest.mark.parametrize("positions", ["window", "canvas"])
    def test_one_window_is_unpatched(self, comfy, flux, positions):
        model, pos, neg = flux
        euler = comfy.samplers.sampler_object("euler")
        plain = sample(comfy, model, euler, pos, neg, 32, 32)
        assert relative(sample(comfy, tiled(model, positions), euler, pos, neg, 32, 32), plain) <= 1e-5

    @pytest.mark.parametrize("wrap", [False, True])
    def test_rows_carry_their_canvas_offset(self, comfy, flux, wrap):
        """A 256x640 px canvas (32x80 latent) of 256 px windows at stride 128, 2 per call: every row's image ids are its
        window's ids + (y/2, x/2) patches (wrap: the last window keeps counting past the width); window positions
        are the host's own (0 … 15); text ids stay 0."""
        from vista.core.canvas.windows import plan_windows

        model, pos, neg = flux
        windows = plan_windows(32, 80, 32, 32, 16, 16, wrap_x=wrap)
        euler = comfy.samplers.sampler_object("euler")
        for positions in ("window", "canvas"):
            recorder, recording = recorded(model)
            sample(comfy, tiled(recording, positions, batch=2, wrap=wrap), euler, pos, neg, 32, 80, steps=1)
            rows = torch.cat([ids for ids, _ in recorder.calls])  # one step: windows in plan order
            assert rows.shape == (len(windows), 16 * 16, 3)
            assert all(torch.equal(txt, torch.zeros_like(txt)) for _, txt in recorder.calls)
            local = rows[0].clone()
            assert local[:, 1].tolist() == [float(r) for r in range(16) for _ in range(16)]
            for win, ids in zip(windows, rows):
                shift = (win.y / 2, win.x / 2) if positions == "canvas" else (0.0, 0.0)
                assert torch.equal(ids[:, 1], local[:, 1] + shift[0]) and torch.equal(ids[:, 2], local[:, 2] + shift[1])
            if wrap:
                assert windows[-1].x + windows[-1].w > 80  # the wrapped window exists

    def test_canvas_positions_change_a_panorama(self, comfy, flux):
        """Several windows: the two settings sample differently (image↔text offsets move) and both are finite."""
        model, pos, neg = flux
        euler = comfy.samplers.sampler_object("euler")
        window = sample(comfy, tiled(model, "window"), euler, pos, neg, 32, 64)
        canvas = sample(comfy, tiled(model, "canvas"), euler, pos, neg, 32, 64)
        assert torch.isfinite(canvas).all() and relative(canvas, window) > 1e-4

    def test_refused_without_a_per_row_hook(self, comfy):
        sd3, _ = tiny_sd3()
        with pytest.raises(ValueError, match=r"Vista Tiled Diffusion: positions=canvas is not available for this model: "
                                             r"OpenAISignatureMMDITWrapper uses a learned position embedding"):
            tiled(sd3, "canvas")
        unet = load_checkpoint()[0]
        with pytest.raises(ValueError, match=r"positions=canvas is not available for this model: UNetModel is a UNet"):
            tiled(unet, "canvas")
        assert tiled(sd3, "window") is not None  # the default keeps working

    def test_unknown_value_named(self, flux):
        with pytest.raises(ValueError, match=r"positions='page' is not one of 'window', 'canvas'"):
            tiled(flux[0], "page")


class TestLatentFusionSampler:
    @pytest.mark.parametrize("positions", ["window", "canvas"])
    def test_one_window_is_euler(self, comfy, flux, positions):
        model, pos, neg = flux
        plain = sample(comfy, model, comfy.samplers.sampler_object("euler"), pos, neg, 32, 32)
        assert relative(sample(comfy, model, fusion(positions), pos, neg, 32, 32), plain) <= 1e-5

    def test_rows_carry_their_canvas_offset(self, comfy, flux):
        """The latent route's calls (3 windows, batches of 2, 2 steps): rows in plan order per step, shifted by
        their window's offset in patches."""
        from vista.core.canvas.windows import plan_windows

        model, pos, neg = flux
        windows = plan_windows(32, 64, 32, 32, 16, 16)
        recorder, recording = recorded(model)
        sample(comfy, recording, fusion("canvas", batch=2), pos, neg, 32, 64, steps=2)
        rows = torch.cat([ids for ids, _ in recorder.calls])
        assert rows.shape[0] == 2 * len(windows)
        local = torch.cat([ids for ids, _ in recorded_window_ids(comfy, model, pos, neg)])[0]
        for k, ids in enumerate(rows):
            win = windows[k % len(windows)]
            assert torch.equal(ids[:, 1], local[:, 1] + win.y / 2) and torch.equal(ids[:, 2], local[:, 2] + win.x / 2)

    def test_canvas_with_guidance_refused(self):
        from vista.nodes.guidance import VistaMultiScaleDiffusion
        from vista.nodes.latent_fusion import VistaLatentFusionSampler

        guidance = VistaMultiScaleDiffusion.execute(levels=2, weight=10.0, guided_fraction=0.3,
                                                    noise_level="faithful (paper)").result[0]
        with pytest.raises(ValueError, match="positions=canvas with a guidance input is not supported"):
            VistaLatentFusionSampler.execute(window_width=256, window_height=256, stride_x=128, stride_y=128,
                                             weight_mode="guided", wrap_x=False, window_batch_size=4, eta=0.0,
                                             s_noise=1.0, variance_corrected=True, guidance=guidance, positions="canvas")

    def test_refused_on_sd3_at_sampling(self, comfy):
        sd3, _ = tiny_sd3()
        with pytest.raises(ValueError, match="Vista Latent Fusion Sampler: positions=canvas is not available"):
            sample(comfy, sd3, fusion("canvas"), dit_conditioning("sd3", 1), dit_conditioning("sd3", 2), 32, 64, cfg=4.0)


def recorded_window_ids(comfy, model, pos, neg):
    """The ids the host gives one standalone 256 px window (the unpatched model on a 32x32 latent)."""
    recorder, recording = recorded(model)
    sample(comfy, recording, comfy.samplers.sampler_object("euler"), pos, neg, 32, 32, steps=1)
    return recorder.calls
