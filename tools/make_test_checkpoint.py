"""Build small random-weight checkpoints that ComfyUI loads as Stable Diffusion 1.5 or as SDXL.

Usage::

    python tools/make_test_checkpoint.py OUT_DIR [--family sd15|sdxl] [--host COMFYUI_PATH] [--force] [--check]

Writes ``OUT_DIR/vista_test_sd15.safetensors`` (default ``--family sd15``) or
``OUT_DIR/vista_test_sdxl.safetensors`` (``--family sdxl``, see :data:`SDXL_UNET_CONFIG`), skipped when a
file of the same build tag (``BUILD`` / ``SDXL_BUILD``) exists, unless ``--force``. The modules are instantiated from the host's OWN classes (``comfy`` is
imported from ``--host``, default ``$COMFYUI_PATH``), so the key names are exactly the
ones ``CheckpointLoaderSimple`` expects:

* ``model.diffusion_model.*``  a slim ``UNetModel``: model_channels=320 and context_dim=768
  (what ``model_detection.detect_unet_config`` + ``supported_models.SD15.matches`` need),
  but only 2 levels, both at 320 channels (channel_mult (1, 1), one res block per level, a
  transformer only at the half-resolution level and in the middle block — attention over the
  full-resolution 64x64 tokens of a 512 px window dominated CPU time): ~37M parameters.
* ``first_stage_model.*``      a TAESD autoencoder (``comfy.taesd.taesd.TAESD``: 4 latent channels,
  8x down/upscale, 2.4M params). ``comfy/sd.py`` detects it by ``taesd_decoder.1.weight`` on
  both hosts. The standard SD VAE (AutoencoderKL) cannot be slimmed on v0.3.64, which
  hard-codes ch=128, and it costs ~30 s per 512x512 decode on 2 CPU cores (2 min for a
  2048x512 panorama); TAESD decodes the same in well under a second.
* ``cond_stage_model.transformer.text_model.*``  the complete CLIP-L text encoder
  (``sd1_clip.SDClipModel``, fixed config; random weights).

The SDXL-family checkpoint (``--family sdxl``; ComfyUI detects it as ``Segmind_Vega``, an SDXL
subclass, and builds ``model_base.SDXL`` with the SDXL latent format, on v0.3.64 and v0.33.0):

* ``model.diffusion_model.*``  a slim UNet with the keys detection matches (supported_models.Segmind_Vega:
  model_channels 320, context_dim 2048, use_linear_in_transformer, adm_in_channels 2816, transformer_depth
  [0, 0, 1, 1, 2, 2]) on SDXL's 3-level geometry (2 res blocks per level, deepest grid 4 latent px) but 320
  channels at every level (channel_mult (1, 1, 1)), output depths [0, 0, 0, 1, 1, 1, 2, 2, 2], middle 1.
* ``first_stage_model.*``      the same TAESD as above (SDXL's VAE is an SD-style AutoencoderKL too; the
  latent format, SDXL's scale 0.13025, comes from the model config, not from the VAE).
* ``conditioner.embedders.0.*`` / ``conditioner.embedders.1.model.*``  the complete CLIP-L and OpenCLIP
  ViT-bigG text encoders (``sdxl_clip.SDXLClipModel``, ~817M parameters), keyed by the host's own
  ``SDXL.process_clip_state_dict_for_saving``. Both configs are fixed JSON files in ComfyUI, and ComfyUI
  builds text encoders with ``comfy.ops`` classes that skip weight init: a slimmer CLIP-G would load with
  its missing layers left as uninitialised memory, so the whole encoder is stored.

Weights are deterministic (seeded generator, small magnitude, stored as fp16), so images
are noise but every tensor stays finite. ``--check`` loads the file back with
``comfy.sd.load_checkpoint_guess_config`` and times a CLIP encode, euler steps at the family's native
window (512 px / 1024 px) and a VAE decode.

This tool is for the test tiers only: it imports the host, and the pack never imports it.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

CHECKPOINT_NAME = "vista_test_sd15.safetensors"
SEED = 20240917
# Bump when the recipe changes: an existing file with another build tag is rebuilt.
BUILD = "5-slim-unet-320x2-attn-level1-taesd-grey"

# Slim SD1.5-compatible UNet. Detection keys on model_channels=320, context_dim=768,
# use_linear_in_transformer=False, adm_in_channels=None (supported_models.SD15.unet_config).
UNET_CONFIG = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1, 1],
    "channel_mult": [1, 1],
    "transformer_depth": [0, 1],  # no attention at full resolution: 2.8x cheaper passes on CPU (4096-token attention)
    "transformer_depth_output": [0, 0, 1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 768,
    "num_heads": 8,
    "num_head_channels": -1,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": False,
    "legacy": False,
    "adm_in_channels": None,
    "use_checkpoint": False,
}

SDXL_CHECKPOINT_NAME = "vista_test_sdxl.safetensors"
SDXL_SEED = 20250920
SDXL_BUILD = "1-vega-detected-320x3-taesd-full-clip-lg"

# Slim SDXL-family UNet. Detection (supported_models.Segmind_Vega.unet_config) keys on model_channels 320,
# use_linear_in_transformer True, transformer_depth [0, 0, 1, 1, 2, 2] (per input res block), context_dim 2048,
# adm_in_channels 2816 and use_temporal_attention False; channel_mult, output and middle depths are free.
SDXL_UNET_CONFIG = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 1, 1],  # SDXL has (1, 2, 4): 1280 channels at the deepest level cost 16x more on CPU
    "transformer_depth": [0, 0, 1, 1, 2, 2],
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 2, 2, 2],
    "transformer_depth_middle": 1,
    "context_dim": 2048,
    "num_heads": -1,
    "num_head_channels": 64,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": True,
    "legacy": False,
    "adm_in_channels": 2816,
    "num_classes": "sequential",
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
    "use_checkpoint": False,
}



def _import_host(host: Path):
    """Import ``comfy`` from the host checkout as ``main.py --use-pytorch-cross-attention`` would,
    with ``--cpu`` unless CUDA is available (benchmarks on a lent GPU use it)."""
    if not (host / "comfy" / "sd.py").is_file():
        raise SystemExit(f"make_test_checkpoint: --host {host} is not a ComfyUI checkout (no comfy/sd.py)")
    sys.path.insert(0, str(host))
    import comfy.options

    import torch

    comfy.options.enable_args_parsing()
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], "--use-pytorch-cross-attention"] + ([] if torch.cuda.is_available() else ["--cpu"])
    try:
        import comfy.cli_args  # noqa: F401  (parses --cpu once, before model_management)
        import comfy.model_management  # noqa: F401
    finally:
        sys.argv = saved_argv
    import comfy.ldm.modules.diffusionmodules.openaimodel
    import comfy.ops
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models
    import comfy.taesd.taesd

    return comfy


def _init_(name: str, tensor, generator, gain: float = 0.5) -> None:
    """Deterministic small-magnitude init: norms 1, biases 0, embeddings N(0, 0.02), weights N(0, gain/sqrt(fan_in))."""
    import torch

    leaf = name.rsplit(".", 1)[-1]
    if not tensor.is_floating_point() or tensor.ndim == 0:
        return  # integer buffers and scalars (TAESD vae_scale=1 / vae_shift=0) keep the constructor's value
    if leaf == "bias":
        tensor.zero_()
    elif tensor.ndim == 1:
        tensor.fill_(1.0)
    elif "embedding" in name:
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
    else:
        fan_in = math.prod(tensor.shape[1:])
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * (gain / math.sqrt(fan_in)))


def _randomised_state_dict(module, prefix: str, generator, keep=lambda k: True, gain: float = 0.5) -> dict:
    import torch

    out = {}
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not keep(name):
                continue
            t = tensor.detach().clone().float()
            _init_(name, t, generator, gain)
            out[prefix + name] = t.to(torch.float16).contiguous()
    return out


def _taesd_state_dict(comfy, generator) -> dict:
    """A seeded TAESD keyed ``first_stage_model.*``.

    Its decoder's last conv bias is 0.5, centring decoded images on mid-grey, so they show visible
    noise (std ~0.16) instead of near-black: a NaN or blank output is then easy to spot.
    """
    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    vae_sd = _randomised_state_dict(vae, "first_stage_model.", generator, gain=1.0)
    last = max((k for k in vae_sd if k.startswith("first_stage_model.taesd_decoder.") and k.endswith(".bias")),
               key=lambda k: int(k.split(".")[2]))
    vae_sd[last].fill_(0.5)
    return vae_sd


def build_state_dict(comfy) -> dict:
    """All three modules, built with the host's classes, keyed like an SD1.5 checkpoint."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    ops = comfy.ops.disable_weight_init  # no init work at construction; _init_ sets every value
    unet = comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel(**UNET_CONFIG, device="cpu", operations=ops)
    sd = _randomised_state_dict(unet, "model.diffusion_model.", generator)
    del unet
    sd.update(_taesd_state_dict(comfy, generator))
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    sd.update(_randomised_state_dict(clip, "cond_stage_model.", generator,
                                     keep=lambda k: k.startswith("transformer.text_model.")))
    return sd


def build_sdxl_state_dict(comfy) -> dict:
    """Slim SDXL-family UNet + TAESD + the complete CLIP-L/CLIP-G, keyed like an SDXL checkpoint."""
    import torch

    generator = torch.Generator().manual_seed(SDXL_SEED)
    ops = comfy.ops.disable_weight_init
    unet = comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel(**SDXL_UNET_CONFIG, device="cpu", operations=ops)
    sd = _randomised_state_dict(unet, "model.diffusion_model.", generator)
    del unet
    sd.update(_taesd_state_dict(comfy, generator))
    clip = comfy.sdxl_clip.SDXLClipModel(device="cpu", dtype=torch.float16)  # fp16: the 695M CLIP-G in half the RAM
    clip_sd = _randomised_state_dict(clip, "", generator)
    del clip
    config = comfy.supported_models.Segmind_Vega(dict(SDXL_UNET_CONFIG))
    sd.update(config.process_clip_state_dict_for_saving(clip_sd))  # the host's own key layout for SDXL files
    return sd


FAMILIES = {  # family -> (file name, build tag, seed, state-dict builder name, what the file is)
    "sd15": (CHECKPOINT_NAME, BUILD, SEED, "build_state_dict", "random-weight SD1.5 test checkpoint"),
    "sdxl": (SDXL_CHECKPOINT_NAME, SDXL_BUILD, SDXL_SEED, "build_sdxl_state_dict",
             "random-weight SDXL-family (Segmind Vega detected) test checkpoint"),
}


def _count(sd: dict, prefix: str) -> int:
    return sum(t.numel() for k, t in sd.items() if k.startswith(prefix))


def _build_tag(path: Path) -> str | None:
    """The ``vista_build`` metadata of an existing checkpoint (None if unreadable)."""
    import safetensors

    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("vista_build")
    except (OSError, ValueError, safetensors.SafetensorError):
        return None


def make_checkpoint(out_dir: Path, host: Path, force: bool = False, family: str = "sd15") -> Path:
    """Write ``out_dir/<the family's file>`` (vista_test_sd15 / vista_test_sdxl) unless it exists; return its path."""
    name, build, seed, builder, what = FAMILIES[family]
    target = out_dir / name
    if target.is_file() and not force and _build_tag(target) == build:
        print(f"make_test_checkpoint: {target} exists (build {build}), not rebuilding")
        return target
    comfy = _import_host(host)
    import safetensors.torch

    start = time.perf_counter()
    sd = globals()[builder](comfy)
    built = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    safetensors.torch.save_file(sd, str(tmp), metadata={"vista": what, "vista_build": build, "seed": str(seed)})
    os.replace(tmp, target)
    clip = sum(_count(sd, p) for p in ("cond_stage_model.", "conditioner."))
    print(f"make_test_checkpoint: unet {_count(sd, 'model.diffusion_model.') / 1e6:.1f}M, "
          f"vae {_count(sd, 'first_stage_model.') / 1e6:.1f}M, clip {clip / 1e6:.1f}M params; "
          f"built in {built:.1f}s, total {time.perf_counter() - start:.1f}s -> {target} "
          f"({target.stat().st_size / 2**20:.0f} MiB)")
    return target


def check_checkpoint(path: Path, host: Path, size: int = 64) -> None:
    """Load through ComfyUI's checkpoint loader and time a CLIP encode, euler steps on a ``size``
    latent (64 = 512 px, SD1.5's window; 128 = 1024 px, SDXL's) and a VAE decode."""
    comfy = _import_host(host)
    import torch

    import comfy.model_detection
    import comfy.sample
    import comfy.sd
    import comfy.utils

    sd = comfy.utils.load_torch_file(str(path))
    print("detected unet config:", comfy.model_detection.detect_unet_config(sd, "model.diffusion_model."))
    start = time.perf_counter()
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    print(f"loaded as {type(model.model.model_config).__name__} ({type(model.model).__name__}, latent format "
          f"{type(model.get_model_object('latent_format')).__name__}) in {time.perf_counter() - start:.1f}s")
    start = time.perf_counter()
    tokens = clip.tokenize("a photo of a city skyline")
    encoded, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    cond = [[encoded, {"pooled_output": pooled}]]
    print(f"clip encode {time.perf_counter() - start:.2f}s: cond {tuple(encoded.shape)}, pooled {tuple(pooled.shape)}")
    latent = torch.zeros(1, 4, size, size)
    noise = comfy.sample.prepare_noise(latent, 0)
    for steps in ((1, 4) if size <= 64 else (1,)):
        start = time.perf_counter()
        out = comfy.sample.sample(model, noise, steps, 7.5, "euler", "normal", cond, cond, latent, disable_pbar=True)
        print(f"{steps} euler step(s) at {size * 8}x{size * 8} px (cfg, batch 2): {time.perf_counter() - start:.2f}s, "
              f"finite={bool(torch.isfinite(out).all())}")
    start = time.perf_counter()
    image = vae.decode(out)
    print(f"vae ({type(vae.first_stage_model).__name__}) decode {size * 8}x{size * 8}: {time.perf_counter() - start:.2f}s, "
          f"shape {tuple(image.shape)}, finite={bool(torch.isfinite(image).all())}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--host", type=Path, default=os.environ.get("COMFYUI_PATH"),
                        help="ComfyUI checkout whose classes build the modules (default: $COMFYUI_PATH)")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="sd15",
                        help="sd15 (vista_test_sd15.safetensors, default) or sdxl (vista_test_sdxl.safetensors)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the file exists")
    parser.add_argument("--check", action="store_true", help="load it back and time a sampling step")
    args = parser.parse_args(argv)
    if args.host is None:
        parser.error("--host is required when COMFYUI_PATH is not set")
    host = args.host.resolve()
    path = make_checkpoint(args.out_dir, host, force=args.force, family=args.family)
    if args.check:
        check_checkpoint(path, host, size=128 if args.family == "sdxl" else 64)
    return 0


if __name__ == "__main__":
    sys.exit(main())
