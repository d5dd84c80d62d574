"""Benchmark: joint zoom-stack sampling vs N independent single-level samplings.

Generative Powers of Ten (Wang et al. 2024), Alg. 2: the N levels of a zoom stack are
denoised together (one batch-N model call per step, then blending + rendering). The
baseline is what a user would otherwise run: N independent samplings of one level each
(stock ``euler_ancestral``, the same steps, batch 1). Both go through the real host
in-process (SamplerCustomAdvanced's path: NOISE → CFGGuider.sample) with the random-weight
SD1.5 test checkpoint (tools/make_test_checkpoint.py). Runs alternate joint / baseline;
medians of ``--repeats`` runs and their ratio are printed. Goal: ratio ≤ 1.15.

    COMFYUI_PATH=/path/to/ComfyUI python bench/zoom.py [--levels 4] [--size 32] [--steps 4] [--repeats 3]

``--size`` is in latent pixels (32 = 256 px on SD1.5). Timings on a shared machine are noisy;
compare ratios from the same run only.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiled import ROOT, _host_and_checkpoint, _load  # noqa: E402  (shared bench helpers)

PROMPTS = ["a spiral galaxy", "a solar system", "a blue planet", "a coastal city at night", "a street",
           "a cafe table", "a coffee cup", "coffee foam bubbles"]


def load_host(host: Path):
    """(comfy, model, clip, nodes) with the pack imported as ``vista`` (repo root never on sys.path)."""
    comfy, model, clip = _host_and_checkpoint(host)
    import comfy.samplers  # noqa: F401

    _load("vista", ROOT, package=True)
    from vista.nodes import zoom as nodes

    return comfy, model, clip, nodes


def run_guided(comfy, model, positive, negative, sampler, noise, latent, steps: int, cfg: float = 7.5):
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    return guider.sample(noise.generate_noise(latent), latent["samples"], sampler, sigmas, disable_pbar=True,
                         seed=noise.seed)


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--size", type=int, default=32, help="latent pixels per side (32 = 256 px on SD1.5)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--zoom-factor", type=int, default=2, choices=(2, 4))
    args = parser.parse_args()
    host = os.environ.get("COMFYUI_PATH")
    if not host:
        raise SystemExit("bench/zoom.py: set COMFYUI_PATH to a ComfyUI checkout")
    comfy, model, clip, nodes = load_host(Path(host))
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    n, p = args.levels, str(args.zoom_factor)
    lines = (PROMPTS * n)[:n]
    with torch.inference_mode():
        stacked = nodes.VistaZoomPrompts.execute(clip, "\n".join(lines)).result[0]
        singles = [clip.encode_from_tokens_scheduled(clip.tokenize(line)) for line in lines]
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        zoom_sampler = nodes.VistaZoomStackSampler.execute(p, 1.0, 1.0, 5, 0.1, 0.8).result[0]
        stock = comfy.samplers.sampler_object("euler_ancestral")
        noise = nodes.VistaZoomNoise.execute(0, p).result[0]
        stack = {"samples": torch.zeros(n, 4, args.size, args.size)}
        level = {"samples": torch.zeros(1, 4, args.size, args.size)}

        def joint():
            run_guided(comfy, model, stacked, negative, zoom_sampler, noise, stack, args.steps)

        def independent():
            for i, positive in enumerate(singles):
                run_guided(comfy, model, positive, negative, stock, Noise_RandomNoise(i), level, args.steps)

        joint(), independent()  # warm-up: model load, allocator
        times = {"joint": [], "independent": []}
        for _ in range(args.repeats):
            times["joint"].append(timed(joint))
            times["independent"].append(timed(independent))
    j, b = statistics.median(times["joint"]), statistics.median(times["independent"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"zoom stack: {n} levels of {args.size}x{args.size} latent px, p={p}, {args.steps} steps, {device}")
    print(f"joint (Vista Zoom Stack Sampler, batch {n}):       median {j:.3f}s  runs {[round(t, 3) for t in times['joint']]}")
    print(f"independent ({n} x euler_ancestral, batch 1):      median {b:.3f}s  runs {[round(t, 3) for t in times['independent']]}")
    print(f"ratio joint / independent = {j / b:.3f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
