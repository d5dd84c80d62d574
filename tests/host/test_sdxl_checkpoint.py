"""Host tier: the slim SDXL-family test checkpoint (tools/make_test_checkpoint.py --family sdxl) on this host.

ComfyUI itself must take it for an SDXL relative: its UNet keys are detected as ``Segmind_Vega`` (an SDXL
subclass: model_channels 320, context 2048, adm 2816, transformer_depth [0, 0, 1, 1, 2, 2]) and built as
``model_base.SDXL`` with the SDXL latent format; its CLIP-L/CLIP-G keys load into ``SDXLClipModel`` with no
layer left uninitialised; the file loads through the checkpoint loader (what CheckpointLoaderSimple calls).
The first two checks run on meta tensors (no weights, milliseconds); the last builds the file once into
``VISTA_TEST_CACHE`` (1.8 GB, ~30-50 s on 2 CPU cores) and loads it (~5 s), then encodes one prompt (~8 s).
"""
import gc

import pytest
import torch

from host import _tool, cache_dir, comfy_path, import_host


@pytest.fixture(scope="module")
def comfy():
    return import_host()


def meta_unet_state_dict(comfy) -> dict:
    unet = comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel(**_tool().SDXL_UNET_CONFIG, device="meta",
                                                                     operations=comfy.ops.disable_weight_init)
    return {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}


class TestSDXLTestCheckpoint:
    def test_unet_detected_as_sdxl_family(self, comfy):
        import comfy.model_detection

        sd = meta_unet_state_dict(comfy)
        config = comfy.model_detection.model_config_from_unet(sd, "model.diffusion_model.")
        assert type(config).__name__ == "Segmind_Vega" and isinstance(config, comfy.supported_models.SDXL)
        assert type(config.latent_format).__name__ == "SDXL"
        model = config.get_model(sd, "model.diffusion_model.", device="meta")
        assert isinstance(model, comfy.model_base.SDXL) and model.model_type == comfy.model_base.ModelType.EPS

    def test_clip_keys_load_without_missing_layers(self, comfy):
        """The tool keys CLIP-L/G with the host's own SDXL.process_clip_state_dict_for_saving; the loader's
        process_clip_state_dict maps them back onto every SDXLClipModel tensor (the loader itself ignores the
        CLIP-L projection and logit scale, which SDXL files do not carry)."""
        clip = comfy.sdxl_clip.SDXLClipModel(device="meta", dtype=torch.float16)
        expected = set(clip.state_dict())
        config = comfy.supported_models.Segmind_Vega(dict(_tool().SDXL_UNET_CONFIG))
        saved = config.process_clip_state_dict_for_saving(clip.state_dict())
        loaded = set(config.process_clip_state_dict(saved))
        assert all(k.startswith(("conditioner.embedders.0.", "conditioner.embedders.1.model.")) for k in saved)
        assert expected - loaded == {"clip_l.transformer.text_projection.weight", "clip_l.logit_scale"}
        assert loaded - expected <= {"clip_l.transformer.text_model.embeddings.position_ids"}

    def test_loads_through_the_checkpoint_loader(self, comfy):
        path = _tool().make_checkpoint(cache_dir(), comfy_path(), family="sdxl")
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
        try:
            assert type(model.model.model_config).__name__ == "Segmind_Vega" and isinstance(model.model, comfy.model_base.SDXL)
            assert type(vae.first_stage_model).__name__ == "TAESD"
            (cond, extra), = clip.encode_from_tokens_scheduled(clip.tokenize("a mountain panorama"))
            assert cond.shape == (1, 77, 2048) and extra["pooled_output"].shape == (1, 1280)
            assert torch.isfinite(cond).all() and torch.isfinite(extra["pooled_output"]).all()
        finally:
            del model, clip, vae
            comfy.model_management.unload_all_models()
            gc.collect()
