"""Build a full-architecture random-weight checkpoint that ComfyUI loads as Stable Diffusion 1.5.

Usage::

    python tools/make_full_sd15.py OUT_DIR [--host COMFYUI_PATH] [--force] [--check]

Writes ``OUT_DIR/vista_full_sd15.safetensors`` (~2 GB; skipped when a file of the same ``BUILD``
exists, unless ``--force``), for benchmarks whose cost ratios depend on the real network sizes
(bench/guidance.py: SyncDiffusion and MSD against MultiDiffusion). Keep it OUTSIDE the repository,
e.g. ``~/.cache/vista-bench``; never commit it. The modules are instantiated from the host's OWN
classes (``comfy`` is imported from ``--host``, default ``$COMFYUI_PATH``), exactly as
tools/make_test_checkpoint.py does (its helpers are reused: host import, seeded small-magnitude
init, fp16 on disk, build tag), but at the real SD1.5 sizes:

* ``model.diffusion_model.*``  the SD1.5 ``UNetModel`` (ComfyUI's ``model_detection`` SD15 config):
  model_channels 320, channel_mult [1, 2, 4, 4], 2 res blocks per level, a depth-1 transformer at
  the three attention levels and in the middle block, context 768, 8 heads: ~860M parameters.
* ``first_stage_model.*``      the standard SD AutoencoderKL (ch 128, ch_mult [1, 2, 4, 4], 2 res
  blocks, 4 latent channels, embed_dim 4): ~84M parameters.
* ``cond_stage_model.transformer.text_model.*``  the complete CLIP-L text encoder (~123M).

Weights are random (seeded, small magnitude), so images are noise, but every tensor has the real
shape and the networks cost what SD1.5 costs. ``--check`` loads the file back with
``comfy.sd.load_checkpoint_guess_config``, prints the detected model class (``SD15``), and times
one UNet call and one VAE decode on a 256 px image.

This tool is for benchmarks only: it imports the host, and the pack never imports it.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

CHECKPOINT_NAME = "vista_full_sd15.safetensors"
SEED = 20250611
# Bump when the recipe changes: an existing file with another build tag is rebuilt.
BUILD = "1-full-sd15-unet-autoencoderkl-clip-l"

# The SD1.5 UNet exactly as comfy/model_detection.py lists it (``SD15``), so detection and
# supported_models.SD15.matches see the real architecture.
UNET_CONFIG = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "transformer_depth_middle": 1,
    "context_dim": 768,
    "num_heads": 8,
    "num_head_channels": -1,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": False,
    "legacy": False,
    "adm_in_channels": None,
    "use_checkpoint": False,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}

# The default SD1.x/2.x VAE as comfy/sd.py builds it for such a checkpoint.
VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def _small_tool():
    """tools/make_test_checkpoint.py as a module (the same module object bench/_common.py uses)."""
    name = "vista_make_test_checkpoint"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "make_test_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_state_dict(comfy) -> dict:
    """UNet, VAE and CLIP-L at the SD1.5 sizes, built with the host's classes, keyed like an SD1.5 checkpoint."""
    import torch

    import comfy.ldm.models.autoencoder

    tool = _small_tool()
    generator = torch.Generator().manual_seed(SEED)
    ops = comfy.ops.disable_weight_init  # no init work at construction; _init_ sets every value
    unet = comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel(**UNET_CONFIG, device="cpu", operations=ops)
    sd = tool._randomised_state_dict(unet, "model.diffusion_model.", generator)
    del unet
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=VAE_DDCONFIG, embed_dim=4)
    sd.update(tool._randomised_state_dict(vae, "first_stage_model.", generator, gain=1.0))
    del vae
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    sd.update(tool._randomised_state_dict(clip, "cond_stage_model.", generator,
                                          keep=lambda k: k.startswith("transformer.text_model.")))
    return sd


def make_checkpoint(out_dir: Path, host: Path, force: bool = False) -> Path:
    """Write ``out_dir/vista_full_sd15.safetensors`` unless it exists with this ``BUILD``; return its path."""
    tool = _small_tool()
    target = out_dir / CHECKPOINT_NAME
    if target.is_file() and not force and tool._build_tag(target) == BUILD:
        print(f"make_full_sd15: {target} exists (build {BUILD}), not rebuilding")
        return target
    comfy = tool._import_host(host)
    import safetensors.torch

    start = time.perf_counter()
    sd = build_state_dict(comfy)
    built = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    safetensors.torch.save_file(sd, str(tmp), metadata={"vista": "random-weight full-architecture SD1.5 benchmark checkpoint",
                                                        "vista_build": BUILD, "seed": str(SEED)})
    os.replace(tmp, target)
    count = tool._count
    print(f"make_full_sd15: unet {count(sd, 'model.diffusion_model.') / 1e6:.1f}M, "
          f"vae {count(sd, 'first_stage_model.') / 1e6:.1f}M, clip {count(sd, 'cond_stage_model.') / 1e6:.1f}M params; "
          f"built in {built:.1f}s, total {time.perf_counter() - start:.1f}s -> {target} "
          f"({target.stat().st_size / 2**20:.0f} MiB)")
    return target


def check_checkpoint(path: Path, host: Path) -> None:
    """Load through ComfyUI's checkpoint loader, print the detected class, time a UNet call and a VAE decode."""
    comfy = _small_tool()._import_host(host)
    import torch

    import comfy.model_detection
    import comfy.sample
    import comfy.sd
    import comfy.utils

    sd = comfy.utils.load_torch_file(str(path))
    print("detected unet config:", comfy.model_detection.detect_unet_config(sd, "model.diffusion_model."))
    del sd
    start = time.perf_counter()
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    print(f"loaded as {type(model.model.model_config).__name__} ({type(model.model).__name__}, "
          f"vae {type(vae.first_stage_model).__name__}, clip {type(clip.cond_stage_model).__name__}) "
          f"in {time.perf_counter() - start:.1f}s")
    cond = [[clip.encode_from_tokens(clip.tokenize("a photo of a city skyline")), {}]]
    latent = torch.zeros(1, 4, 32, 32)
    noise = comfy.sample.prepare_noise(latent, 0)
    for _ in range(2):  # the first call loads the weights
        start = time.perf_counter()
        out = comfy.sample.sample(model, noise, 1, 7.5, "euler", "normal", cond, cond, latent, disable_pbar=True)
    print(f"1 euler step at 256x256 px (cfg, batch 2): {time.perf_counter() - start:.2f}s, "
          f"finite={bool(torch.isfinite(out).all())}")
    start = time.perf_counter()
    image = vae.decode(out)
    print(f"vae decode 256x256 px: {time.perf_counter() - start:.2f}s, shape {tuple(image.shape)}, "
          f"finite={bool(torch.isfinite(image).all())}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for the checkpoint, outside the repository (~2 GB)")
    parser.add_argument("--host", type=Path, default=os.environ.get("COMFYUI_PATH"),
                        help="ComfyUI checkout whose classes build the modules (default: $COMFYUI_PATH)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the file exists")
    parser.add_argument("--check", action="store_true", help="load it back, print the detected class, time a step")
    args = parser.parse_args(argv)
    if args.host is None:
        parser.error("--host is required when COMFYUI_PATH is not set")
    host = args.host.resolve()
    path = make_checkpoint(args.out_dir.expanduser(), host, force=args.force)
    if args.check:
        check_checkpoint(path, host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
