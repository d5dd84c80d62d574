"""Benchmark joint zoom-stack sampling against N independent single-level samplings.

Generative Powers of Ten (Wang et al. 2024), Alg. 2: the N levels of a zoom stack are denoised
together (one batch-N model call per step, then blending + rendering). Compares, in ONE process
through SamplerCustomAdvanced's path (NOISE -> CFGGuider.sample):
  A = what a user would otherwise run: N independent samplings of one level each (stock
      ``euler_ancestral``, the same steps, batch 1, RandomNoise);
  B = Vista Zoom (Settings +) Prompts + Zoom Noise + Zoom Stack Sampler on the N-level stack.
Both sides are warmed up, then ABBA rounds run, one line per run as it finishes (wall and
UNet-only seconds, UNet calls, peak RSS), then medians, min–max and the joint ÷ independent
ratio of the wall medians and of the UNet medians. Goal: wall ratio <= 1.15.

Usage::

    COMFYUI_PATH=/path/to/ComfyUI python bench/zoom.py [--ckpt PATH] [--pack PATH] [--rounds 1]
        [--levels 3] [--size 256] [--steps 3] [--zoom-factor 2]

The defaults are CPU-sized (3 levels of 256×256 px, 3 steps, the random-weight SD1.5 test
checkpoint: a few minutes on 2 cores); on a GPU pass a real model and size, e.g.
``--ckpt sd15.safetensors --levels 4 --size 512 --steps 30``. ``--size`` is image pixels per side.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bench  # noqa: E402  (bench helpers; the host is imported lazily)

PROMPTS = ["a spiral galaxy", "a solar system", "a blue planet", "a coastal city at night", "a street",
           "a cafe table", "a coffee cup", "coffee foam bubbles"]


def zoom_nodes(clip, lines: list[str], p: int):
    """(positive CONDITIONING of batch N, SAMPLER, NOISE) from the Vista zoom nodes.

    The only place that calls the zoom nodes. Packs with Vista Zoom Settings (one VISTA_ZOOM
    object wired into every zoom node) and older packs (a zoom_factor widget on each node)
    are both handled, so "before" and "after" checkouts can be timed with one script.
    """
    from vista.nodes import zoom as nodes

    sampler_inputs = {"eta": 1.0, "s_noise": 1.0, "photo_steps": 5, "photo_lr": 0.1, "photo_until": 0.8}
    if hasattr(nodes, "VistaZoomSettings"):
        zoom = nodes.VistaZoomSettings.execute(zoom_factor=str(p), levels=len(lines)).result[0]
        stacked = nodes.VistaZoomPrompts.execute(zoom=zoom, clip=clip, prompts="\n".join(lines)).result[0]
        sampler = nodes.VistaZoomStackSampler.execute(zoom=zoom, **sampler_inputs).result[0]
        noise = nodes.VistaZoomNoise.execute(zoom=zoom, noise_seed=0).result[0]
        return stacked, sampler, noise
    stacked = nodes.VistaZoomPrompts.execute(clip=clip, prompts="\n".join(lines)).result[0]
    sampler = nodes.VistaZoomStackSampler.execute(zoom_factor=str(p), **sampler_inputs).result[0]
    noise = nodes.VistaZoomNoise.execute(noise_seed=0, zoom_factor=str(p)).result[0]
    return stacked, sampler, noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_common_args(parser)
    parser.add_argument("--levels", type=int, default=3, help="zoom levels N (default 3)")
    parser.add_argument("--size", type=int, default=256, help="image pixels per side of every level (default 256)")
    parser.add_argument("--steps", type=int, default=3, help="sampling steps (default 3)")
    parser.add_argument("--zoom-factor", type=int, default=2, choices=(2, 4), help="zoom p between levels (default 2)")
    args = parser.parse_args()
    host = bench.host_path("bench/zoom.py")
    comfy = bench.import_host(host)
    model, clip, ckpt_name = bench.load_checkpoint(comfy, host, args.ckpt)
    bench.load_pack(args.pack)
    import torch
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    timer = bench.UnetTimer(comfy)
    timer.attach(model)
    n = args.levels
    lines = (PROMPTS * n)[:n]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", args.steps).cpu()

    def guided(positive, sampler, noise, latent):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(bench.CFG)
        return guider.sample(noise.generate_noise(latent), latent["samples"], sampler, sigmas, disable_pbar=True,
                             seed=noise.seed)

    with torch.inference_mode():  # as ComfyUI runs nodes
        stacked, zoom_sampler, zoom_noise = zoom_nodes(clip, lines, args.zoom_factor)
        singles = [bench.encode(clip, line) for line in lines]
        negative = bench.encode(clip, "")
        stock = comfy.samplers.sampler_object("euler_ancestral")
        stack = {"samples": bench.empty_latent(model, args.size, args.size, batch=n)}
        level = {"samples": bench.empty_latent(model, args.size, args.size)}

        def independent():
            for i, positive in enumerate(singles):
                guided(positive, stock, Noise_RandomNoise(i), level)

        print(bench.describe(host, args.pack, ckpt_name))
        print(f"zoom stack: {n} levels of {args.size}x{args.size} px, p={args.zoom_factor}, {args.steps} steps, "
              f"cfg {bench.CFG}; {args.rounds} ABBA round(s): {2 * args.rounds} timed runs per side")
        runs = bench.abba("zoom stack", (f"A independent {n}x euler_a", independent),
                          (f"B joint zoom stack, batch {n}", lambda: guided(stacked, zoom_sampler, zoom_noise, stack)),
                          args.rounds, timer)
    bench.summarise(runs, "joint / independent", "goal wall <= 1.15")


if __name__ == "__main__":
    main()
