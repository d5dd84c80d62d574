"""Cost of Style Alignment and of Variance-Corrected Fusion on a whole latent-fusion sampling run.

Run: ``COMFYUI_PATH=/path/to/ComfyUI python bench/fusion.py [--repeats 3] [--steps 2] [--width 64]``

The real host is imported in-process (CPU unless the host finds a GPU) with the random-weight
SD1.5 test checkpoint (tools/make_test_checkpoint.py, via tests/support/host.py). Each ratio
compares two configurations of the same SamplerCustomAdvanced-style run (CFGGuider + Vista
Latent Fusion Sampler + normal schedule), timed alternately in the same process after one
warm-up of each; the ratio is median(with) / median(without). Target: <= 1.02x.

- Style Alignment: noise from Vista Style Alignment (alpha 0.4) vs RandomNoise, eta 0.
- VCF: eta 1 with variance_corrected on vs off.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_pack() -> None:
    """Import the pack as ``vista`` without putting the repo root on sys.path (it would shadow ComfyUI's nodes.py)."""
    spec = importlib.util.spec_from_file_location("vista", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["vista"] = module
    spec.loader.exec_module(module)


def make_run(comfy, model, positive, negative, height: int, width: int, steps: int):
    """A closure running one whole sampling pass: ``run(noise, sampler)`` -> latent."""
    import torch

    latent = {"samples": torch.zeros(1, 4, height, width)}
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps).cpu()

    def run(noise, sampler):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(5.0)
        return guider.sample(noise.generate_noise(latent), latent["samples"], sampler, sigmas, disable_pbar=True,
                             seed=noise.seed)

    return run


def ratio(run, with_args, without_args, repeats: int) -> tuple[float, float, float]:
    """(median with, median without, ratio), alternating with/without after one warm-up of each."""
    run(*with_args), run(*without_args)
    times = {True: [], False: []}
    for _ in range(repeats):
        for flag, args in ((True, with_args), (False, without_args)):
            start = time.perf_counter()
            run(*args)
            times[flag].append(time.perf_counter() - start)
    a, b = statistics.median(times[True]), statistics.median(times[False])
    return a, b, a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--height", type=int, default=32, help="canvas height, latent px")
    parser.add_argument("--width", type=int, default=64, help="canvas width, latent px (64 = 3 windows)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from host import encode, import_host, load_checkpoint

    comfy = import_host()
    load_pack()
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise
    from vista.nodes.latent_fusion import VistaLatentFusionSampler
    from vista.nodes.style_alignment import VistaStyleAlignment

    model, clip, _ = load_checkpoint()
    run = make_run(comfy, model, encode(clip, "a panorama"), encode(clip, ""), args.height, args.width, args.steps)
    window = dict(window_width=256, window_height=256, stride_x=128, stride_y=128, weight_mode="guided", wrap_x=False,
                  window_batch_size=4, s_noise=1.0)
    sampler = lambda eta, vcf: VistaLatentFusionSampler.execute(eta=eta, variance_corrected=vcf, **window).result[0]
    aligned = VistaStyleAlignment.execute(model, noise_seed=1, window_width=256, window_height=256, alpha=0.4,
                                          reference="seeded").result[0]
    plain = Noise_RandomNoise(1)

    where = f"{args.height}x{args.width} latent, {args.steps} steps, 256 px windows stride 128, median of {args.repeats}"
    a, b, r = ratio(run, (aligned, sampler(0.0, True)), (plain, sampler(0.0, True)), args.repeats)
    print(f"Style Alignment / RandomNoise (eta 0): {r:.3f}x  ({a:.2f} s vs {b:.2f} s; {where}; target <= 1.02x)")
    a, b, r = ratio(run, (plain, sampler(1.0, True)), (plain, sampler(1.0, False)), args.repeats)
    print(f"VCF / plain averaging (eta 1):         {r:.3f}x  ({a:.2f} s vs {b:.2f} s; {where}; target <= 1.02x)")


if __name__ == "__main__":
    main()
