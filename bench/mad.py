"""Benchmark Vista MAD Attention against plain MultiDiffusion (issue [C], item 5).

Compares, for each canvas width, in ONE process with the same checkpoint, euler sampler, seed
and windows:  A = Vista Tiled Diffusion (MultiDiffusion)  vs  B = the same + Vista MAD Attention
(merge the windows before attention for the first tau of the steps). Prints one line per run
as it finishes (wall and UNet-only seconds, UNet calls, peak RSS), then per width the medians,
min–max, and the MAD ÷ MultiDiffusion ratio of the wall medians and of the UNet medians.
Target: wall ratio <= 1.10 at the paper's geometry (512×3072 px, tau 0.3). Merged
self-attention is quadratic in the canvas tokens, so the ratio grows with the width; the last
line says where <= 1.10 stops holding. ``--tau 1`` applies MAD on every step and exposes its
attention overhead (the MAD time is inside the UNet column: the wrapper times the whole network).

Usage::

    COMFYUI_PATH=/path/to/ComfyUI python bench/mad.py [--ckpt PATH] [--pack PATH] [--rounds 1]
        [--widths 768 ...] [--height 256] [--window 256] [--stride 128] [--batch 8] [--steps 3] [--tau 0.3]

The defaults are CPU-sized (256×768 px, 256 px windows at stride 128 px, 3 steps, the random-weight SD1.5 test
checkpoint: a few minutes on 2 cores); on a GPU pass the paper's geometry and a real model,
e.g. ``--ckpt sd15.safetensors --widths 1024 2048 3072 --height 512 --window 512 --stride 128
--steps 50``. Sizes are image pixels.
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
    parser.add_argument("--widths", type=int, nargs="+", default=[768], help="canvas widths, px (default 768)")
    parser.add_argument("--height", type=int, default=256, help="canvas height, px (default 256)")
    parser.add_argument("--window", type=int, default=256, help="window size, px (default 256)")
    parser.add_argument("--stride", type=int, default=128, help="window stride, px (default 128)")
    parser.add_argument("--batch", type=int, default=8, help="windows per UNet call without MAD (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="euler steps (default 3)")
    parser.add_argument("--tau", type=float, default=0.3, help="MAD for the first tau of the steps (default 0.3)")
    args = parser.parse_args()
    host = bench.host_path("bench/mad.py")
    comfy = bench.import_host(host)
    model, clip, ckpt_name = bench.load_checkpoint(comfy, host, args.ckpt)
    bench.load_pack(args.pack)
    from vista.nodes.mad import VistaMADAttention
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    timer = bench.UnetTimer(comfy)
    timer.attach(model)  # before the nodes clone it: both sides report to this timer
    tiled = VistaTiledDiffusion.execute(model, window_width=args.window, window_height=args.window,
                                        stride_x=args.stride, stride_y=args.stride, weight_mode="uniform",
                                        wrap_x=False, window_batch_size=args.batch).result[0]
    mad = VistaMADAttention.execute(tiled, tau=args.tau, input_blocks=True, middle_block=True,
                                    output_blocks=True).result[0]
    cond = bench.encode(clip, bench.PROMPT)

    def sampling(patched, width: int):
        latent = bench.empty_latent(patched, args.height, width)
        noise = comfy.sample.prepare_noise(latent, 0)
        return lambda: comfy.sample.sample(patched, noise, args.steps, bench.CFG, "euler", "normal", cond, cond,
                                           latent, disable_pbar=True, seed=0)

    print(bench.describe(host, args.pack, ckpt_name))
    print(f"{args.steps} euler steps, cfg {bench.CFG}, tau {args.tau}, window {args.window} px, stride {args.stride} px, "
          f"batch {args.batch}; {args.rounds} ABBA round(s): {2 * args.rounds} timed runs per side")
    results = []
    for width in args.widths:
        runs = bench.abba(f"canvas {args.height}x{width} px", ("A MultiDiffusion", sampling(tiled, width)),
                          (f"B MAD tau={args.tau}", sampling(mad, width)), args.rounds, timer)
        wall, unet = bench.summarise(runs, "MAD / MultiDiffusion", "target wall <= 1.10")
        results.append((width, wall, unet))
    print("\nwidth_px  wall_ratio  unet_ratio")
    for width, wall, unet in results:
        print(f"{width:8d}  {wall:10.3f}  {unet:10.3f}")
    over = [width for width, wall, _ in results if wall > 1.10]
    print("wall ratio <= 1.10 held at every width" if not over else f"wall ratio <= 1.10 stops holding at {over[0]} px")


if __name__ == "__main__":
    main()
