"""Benchmark the cost of Style Alignment and of Variance-Corrected Fusion on a whole latent-fusion run.

Compares two configurations of the same SamplerCustomAdvanced-style run (CFGGuider + Vista
Latent Fusion Sampler, guided weights, normal schedule), in ONE process:
  1. Style Alignment:  A = RandomNoise  vs  B = Vista Style Alignment noise (alpha 0.4), eta 0;
  2. VCF:              A = eta 1, variance_corrected off  vs  B = eta 1, variance_corrected on.
Each comparison warms up both sides, then runs ABBA rounds, printing one line per run as it
finishes (wall and UNet-only seconds, UNet calls, peak RSS), then medians, min–max and the
B ÷ A ratio of the wall medians and of the UNet medians. Target: wall ratio <= 1.02 (the UNet
work is identical on both sides, so the UNet ratio should be ~1.0 and any gap is overhead).

Usage::

    COMFYUI_PATH=/path/to/ComfyUI python bench/fusion.py [--ckpt PATH] [--pack PATH] [--rounds 1]
        [--width 512] [--height 256] [--window 256] [--stride 128] [--batch 4] [--steps 2]

The defaults are CPU-sized (256×512 px, 3 windows of 256 px, 2 steps, the random-weight SD1.5
test checkpoint: a few minutes on 2 cores); on a GPU pass a real model and size, e.g.
``--ckpt sd15.safetensors --width 2048 --height 512 --window 512 --stride 256 --steps 20``.
Sizes are image pixels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bench  # noqa: E402  (bench helpers; the host is imported lazily)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench.add_common_args(parser)
    parser.add_argument("--width", type=int, default=512, help="canvas width, px (default 512)")
    parser.add_argument("--height", type=int, default=256, help="canvas height, px (default 256)")
    parser.add_argument("--window", type=int, default=256, help="window size, px (default 256)")
    parser.add_argument("--stride", type=int, default=128, help="window stride, px (default 128)")
    parser.add_argument("--batch", type=int, default=4, help="windows per UNet call (default 4)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps (default 2)")
    args = parser.parse_args()
    host = bench.host_path("bench/fusion.py")
    comfy = bench.import_host(host)
    model, clip, ckpt_name = bench.load_checkpoint(comfy, host, args.ckpt)
    bench.load_pack(args.pack)
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise
    from vista.nodes.latent_fusion import VistaLatentFusionSampler
    from vista.nodes.style_alignment import VistaStyleAlignment

    timer = bench.UnetTimer(comfy)
    timer.attach(model)
    positive, negative = bench.encode(clip, bench.PROMPT), bench.encode(clip, "")
    latent = {"samples": bench.empty_latent(model, args.height, args.width)}
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", args.steps).cpu()

    def sampling(noise, sampler):
        def run():
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(positive, negative)
            guider.set_cfg(bench.CFG)
            return guider.sample(noise.generate_noise(latent), latent["samples"], sampler, sigmas, disable_pbar=True,
                                 seed=noise.seed)
        return run

    def sampler(eta: float, vcf: bool):
        return VistaLatentFusionSampler.execute(
            window_width=args.window, window_height=args.window, stride_x=args.stride, stride_y=args.stride,
            weight_mode="guided", wrap_x=False, window_batch_size=args.batch, eta=eta, s_noise=1.0,
            variance_corrected=vcf).result[0]

    aligned = VistaStyleAlignment.execute(model, noise_seed=1, window_width=args.window, window_height=args.window,
                                          alpha=0.4, reference="seeded").result[0]
    plain = Noise_RandomNoise(1)
    print(bench.describe(host, args.pack, ckpt_name))
    print(f"canvas {args.height}x{args.width} px, window {args.window} px, stride {args.stride} px, batch {args.batch}, "
          f"{args.steps} steps, cfg {bench.CFG}; {args.rounds} ABBA round(s): {2 * args.rounds} timed runs per side")
    runs = bench.abba("1. Style Alignment (eta 0)", ("A RandomNoise", sampling(plain, sampler(0.0, True))),
                      ("B Style Alignment a=0.4", sampling(aligned, sampler(0.0, True))), args.rounds, timer)
    bench.summarise(runs, "Style Alignment / RandomNoise", "target wall <= 1.02")
    runs = bench.abba("2. Variance-Corrected Fusion (eta 1)", ("A VCF off", sampling(plain, sampler(1.0, False))),
                      ("B VCF on", sampling(plain, sampler(1.0, True))), args.rounds, timer)
    bench.summarise(runs, "VCF on / off", "target wall <= 1.02")


if __name__ == "__main__":
    main()
