"""Train the small class-conditioned denoiser of Vista's coherence world (issue [G], bench/COHERENCE.md).

The network is ComfyUI's own ``UNetModel`` (``comfy.ldm.modules.diffusionmodules.openaimodel``, imported from
the host checkout, never copied), conditioned through cross-attention on 4 learned "prompt" tokens per scene
class (day / dusk / night) plus one empty prompt for classifier-free guidance. It works in **the world's latent**
(``bench.evaluation.world.encode_latent``): a 64×64 px RGB window in [-1, 1] becomes 3 × 16 × 16 (4×4 block means); the UNet's 3 levels see 16, 8, 4 latent px, with attention at 8 and 4. 64 px is
the smallest window the Vista nodes' schemas accept.

Objective: v-prediction with SD1.5's discrete schedule (ComfyUI's ``ModelSamplingDiscrete`` defaults: linear β
0.00085 → 0.012, 1000 steps), the input scaled as ComfyUI's EPS and V_PREDICTION models do at inference
(``x_in = (x0 + σ ε) / sqrt(σ² + 1)``, timestep ``t``), so the weights sample through the host's
``model_base.BaseModel`` (``ModelType.V_PREDICTION``, as SD2.x-v) unchanged. Data: fresh window crops of wide world scenes every step
(``bench.evaluation.world.random_crops``, zoom 1 and 2), seeded by ``(seed, step)``.

Usage (ComfyUI's Python, or any with torch + safetensors; ``--comfyui`` defaults to ``$COMFYUI_PATH``)::

    python tools/train_world_denoiser.py --out bench/data/world_denoiser.safetensors            # full run
    python tools/train_world_denoiser.py --steps 20 --out /tmp/smoke.safetensors                 # smoke / timing

Reproducibility: every random draw comes from seeded generators, and the script pins the thread count
(``--threads``). CPU training is bitwise-reproducible only on the same machine, torch build and thread
count (oneDNN/MKL kernels differ elsewhere), so the reproduction criterion is a metric: the EMA weights'
held-out denoising loss (``eval_mse``, a fixed seeded batch of 96 crops × 8 timesteps, stored in the file's
metadata) must be reproduced within ``REPRO_TOLERANCE`` (relative).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: UNetModel arguments (ComfyUI's names). 3 levels (16, 8, 4 latent px), one res block each, attention (depth 1,
#: 32-channel heads, linear projections) at the 8 and 4 px levels and in the middle block: 1.71M parameters,
#: 178 MFLOP per 64×64 px window evaluation (torch.utils.flop_counter). Window offsets must be multiples of
#: 4 latent px (16 px) for MAD.
WORLD_UNET_CONFIG = {
    "image_size": 16, "in_channels": 3, "out_channels": 3, "model_channels": 32, "num_res_blocks": [1, 1, 1],
    "channel_mult": [1, 2, 2], "transformer_depth": [0, 1, 1], "transformer_depth_output": [0, 0, 1, 1, 1, 1],
    "transformer_depth_middle": 1, "context_dim": 64, "num_heads": -1, "num_head_channels": 32,
    "use_spatial_transformer": True, "use_linear_in_transformer": True, "legacy": False, "adm_in_channels": None,
    "use_checkpoint": False,
}
#: The SD-like variant (issue [B] item 3): attention at every level, the finest (16 latent px, 256 tokens) included,
#: as SD1.5 has self- and cross-attention at 3 of its 4 resolutions including the finest (64 latent px at 512 px).
#: MAD (attention merging) and MSD act through attention and the finest scales, which the first world UNet lacks.
SD_LIKE_UNET_CONFIG = {**WORLD_UNET_CONFIG, "transformer_depth": [1, 1, 1],
                       "transformer_depth_output": [1, 1, 1, 1, 1, 1]}
ARCHITECTURES = {"world": WORLD_UNET_CONFIG, "sd-like": SD_LIKE_UNET_CONFIG}
CLASSES = 3  # day, dusk, night (bench.evaluation.world.SCENE_CLASSES); row CLASSES of the token table is the empty prompt
PROMPT_TOKENS = 4
WINDOW = 64  # px
REPRO_TOLERANCE = 0.05  # relative tolerance on eval_mse for a reproduction on another machine
EVAL_SEED, EVAL_CROPS, EVAL_TIMESTEPS = 12345, 96, (20, 100, 250, 400, 550, 700, 850, 980)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_world():
    """``bench.evaluation.world`` without importing the pack's ComfyUI entry point (loaded as package ``vista``)."""
    if "vista" not in sys.modules:
        spec = importlib.util.spec_from_file_location("vista", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["vista"] = module
        spec.loader.exec_module(module)
    import vista.bench.evaluation.world as world

    return world


def build_unet(comfy, seed: int, config: dict = WORLD_UNET_CONFIG):
    """The host's UNetModel with PyTorch's default init, drawn from ``seed``; the output conv starts at zero.

    ComfyUI builds it with ``comfy.ops.disable_weight_init`` (weights left uninitialised, as for a checkpoint
    load), so every Conv/Linear/norm gets its torch base class's ``reset_parameters`` in module order.
    """
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(seed)
    net = UNetModel(**config, operations=comfy.ops.disable_weight_init)
    bases = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm)
    for module in net.modules():
        base = next((b for b in bases if isinstance(module, b)), None)
        if base is not None:
            base.reset_parameters(module)
    torch.nn.init.zeros_(net.out[-1].weight)
    torch.nn.init.zeros_(net.out[-1].bias)
    return net


def batch(world, seed: int, step: int, size: int):
    """Training crops of one step: (latents (B, 3, 16, 16), class ids (B,)), fixed by ``(seed, step)``."""
    crops = world.random_crops(seed * 1_000_003 + step, size, WINDOW, scene_windows=6, zooms=(1, 2), crops_per_scene=8)
    return world.encode_latent(crops["images"]), crops["class_ids"]


def v_loss(net, tokens, sigmas, x0, classes, t, noise):
    """v-prediction MSE at discrete timesteps ``t``, in ComfyUI's ``V_PREDICTION`` parameterisation.

    ComfyUI feeds ``x_in = (x0 + σε) / sqrt(σ² + 1)`` and decodes ``x0 = x / (σ² + 1) − out · σ / sqrt(σ² + 1)``
    (``model_sampling.V_PREDICTION``, σ_data = 1), so the target is ``v = (ε − σ x0) / sqrt(σ² + 1)``. Unlike ε,
    v keeps the clean image in the target at high noise, where an ε-model's small errors are multiplied by σ
    into the image's colours (the ε-trained world models drifted to colours the world never has).
    """
    sigma = sigmas[t].view(-1, 1, 1, 1)
    scale = (sigma**2 + 1).sqrt()
    x_in = (x0 + sigma * noise) / scale
    target = (noise - sigma * x0) / scale
    return (net(x_in, t.float(), context=tokens[classes]) - target).pow(2).mean()


def evaluate(net, tokens, sigmas, world) -> float:
    """Held-out denoising loss: a fixed batch of crops at fixed timesteps and noise (the reproduction metric)."""
    import torch

    g = torch.Generator().manual_seed(EVAL_SEED)
    x0, classes = batch(world, EVAL_SEED, 0, EVAL_CROPS)
    losses = []
    with torch.no_grad():
        for t in EVAL_TIMESTEPS:
            noise = torch.randn(x0.shape, generator=g)
            losses.append(v_loss(net, tokens, sigmas, x0, classes, torch.full((len(x0),), t), noise).item())
    return sum(losses) / len(losses)


def train(comfy, args) -> dict:
    """Run the training loop; returns the EMA state (UNet + prompt tokens) and the run's measurements."""
    import copy

    import torch
    import comfy.model_sampling

    world = import_world()
    sigmas = comfy.model_sampling.ModelSamplingDiscrete(None).sigmas.float()
    net = build_unet(comfy, args.seed, ARCHITECTURES[args.architecture])
    tokens = torch.nn.Parameter(torch.randn(CLASSES + 1, PROMPT_TOKENS, WORLD_UNET_CONFIG["context_dim"],
                                            generator=torch.Generator().manual_seed(args.seed + 1)))
    ema_net, ema_tokens = copy.deepcopy(net).requires_grad_(False), tokens.detach().clone()
    opt = torch.optim.AdamW([*net.parameters(), tokens], lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed + 2)
    start, log = time.perf_counter(), []
    for step in range(args.steps):
        x0, classes = batch(world, args.seed, step, args.batch)
        drop = torch.rand(len(classes), generator=g) < args.cfg_dropout
        classes = torch.where(drop, CLASSES, classes)
        t = torch.randint(0, len(sigmas), (len(x0),), generator=g)
        loss = v_loss(net, tokens, sigmas, x0, classes, t, torch.randn(x0.shape, generator=g))
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*net.parameters(), tokens], 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for e, p in zip(ema_net.parameters(), net.parameters()):
                e.lerp_(p, 1 - decay)
            ema_tokens.lerp_(tokens.detach(), 1 - decay)
        log.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            elapsed = time.perf_counter() - start
            print(f"step {step + 1}/{args.steps}  loss {sum(log[-args.log_every:]) / len(log[-args.log_every:]):.4f}  "
                  f"{elapsed / (step + 1):.2f} s/step  eta {elapsed / (step + 1) * (args.steps - step - 1) / 60:.1f} min",
                  flush=True)
    seconds = time.perf_counter() - start
    eval_mse = evaluate(ema_net, ema_tokens, sigmas, world)
    return {"net": ema_net, "tokens": ema_tokens, "seconds": seconds, "eval_mse": eval_mse, "final_loss": log[-1]}


def save(result: dict, args, out: Path) -> None:
    """Safetensors: ``model.diffusion_model.*`` (ComfyUI's key prefix) + ``vista_world.prompt_tokens``."""
    import safetensors.torch

    state = {f"model.diffusion_model.{k}": v.detach().contiguous() for k, v in result["net"].state_dict().items()}
    state["vista_world.prompt_tokens"] = result["tokens"].contiguous()
    meta = {"vista": "world_denoiser", "unet_config": json.dumps(ARCHITECTURES[args.architecture]),
            "architecture": args.architecture, "classes": "day,dusk,night,empty", "prediction": "v",
            "latent": "bench.evaluation.world.encode_latent (4x4 block means)", "window_px": str(WINDOW), "seed": str(args.seed),
            "steps": str(args.steps), "batch": str(args.batch), "lr": str(args.lr), "ema": str(args.ema),
            "cfg_dropout": str(args.cfg_dropout), "threads": str(args.threads), "eval_mse": f"{result['eval_mse']:.6f}",
            "train_seconds": f"{result['seconds']:.0f}", "repro_tolerance": str(REPRO_TOLERANCE)}
    out.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(state, str(out), metadata=meta)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout")
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--cfg-dropout", type=float, default=0.1, help="probability of the empty prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="world",
                        help="world: attention at the 8 and 4 latent px levels (bench/data/world_denoiser.safetensors); "
                             "sd-like: at every level, as SD1.5 (bench/data/world_denoiser_sd_like.safetensors)")
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)
    if args.comfyui is None:
        parser.error("--comfyui (or COMFYUI_PATH) must name a ComfyUI checkout: the UNet is the host's class")
    import torch

    torch.set_num_threads(args.threads)
    comfy = _load("vista_make_test_checkpoint", ROOT / "tools" / "make_test_checkpoint.py")._import_host(args.comfyui)
    params = sum(p.numel() for p in build_unet(comfy, args.seed, ARCHITECTURES[args.architecture]).parameters())
    print(f"world denoiser ({args.architecture}): {params / 1e6:.2f}M parameters, {args.steps} steps x batch {args.batch}, {args.threads} threads")
    result = train(comfy, args)
    save(result, args, args.out)
    print(f"trained in {result['seconds']:.0f} s ({result['seconds'] / args.steps:.2f} s/step); "
          f"eval_mse {result['eval_mse']:.4f} (EMA weights); wrote {args.out}")
    if not math.isfinite(result["eval_mse"]):
        raise SystemExit("training diverged (eval_mse is not finite)")


if __name__ == "__main__":
    main()
