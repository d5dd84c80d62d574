"""Benchmark Vista MAD Attention against plain MultiDiffusion (issue [C], item 5).

For each canvas width, in ONE process with the same checkpoint, sampler, seed and windows:
wall time of Vista Tiled Diffusion + Vista MAD Attention (tau) ÷ Vista Tiled Diffusion alone,
runs alternated, medians printed, plus peak resident memory (ru_maxrss, which only grows: the
MultiDiffusion widths run first, so a jump in the MAD column is MAD's extra peak).
Merged self-attention is quadratic in the canvas tokens, so the ratio grows with the width;
the printout says where ≤ 1.10× stops holding.

Usage::

    COMFYUI_PATH=/path/to/ComfyUI python bench/mad.py [--widths 1024 1536 2048] [--steps 10] [--tau 0.3]

The paper's geometry is 512×3072 px (64×384 latent); on a 2-core CPU use the widest that fits a
few minutes. The random-weight SD1.5 test checkpoint comes from tools/make_test_checkpoint.py.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiled import ROOT, _host_and_checkpoint, _load  # noqa: E402  (bench helpers; host imported lazily)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 1536, 2048], help="canvas widths, px")
    parser.add_argument("--height", type=int, default=512, help="canvas height, px")
    parser.add_argument("--window", type=int, default=512, help="window size, px")
    parser.add_argument("--stride", type=int, default=128, help="window stride, px")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tau", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("COMFYUI_PATH"):
        raise SystemExit("bench/mad.py: set COMFYUI_PATH to a ComfyUI checkout")
    import torch

    comfy, model, clip = _host_and_checkpoint(Path(os.environ["COMFYUI_PATH"]))
    _load("vista", ROOT, package=True)
    from vista.nodes.mad import VistaMADAttention
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    tiled = VistaTiledDiffusion.execute(model, window_width=args.window, window_height=args.window, stride_x=args.stride,
                                        stride_y=args.stride,
                                        weight_mode="uniform", wrap_x=False, window_batch_size=8).result[0]
    mad = VistaMADAttention.execute(tiled, tau=args.tau, input_blocks=True, middle_block=True, output_blocks=True).result[0]
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a panorama of a mountain lake"))

    def run(m, width):
        latent = torch.zeros(1, 4, args.height // 8, width // 8)
        noise = comfy.sample.prepare_noise(latent, 0)
        start = time.perf_counter()
        comfy.sample.sample(m, noise, args.steps, 5.0, "euler", "normal", cond, cond, latent, disable_pbar=True, seed=0)
        return time.perf_counter() - start

    print(f"{args.steps} euler steps, tau {args.tau}, window {args.window} px, stride {args.stride} px, "
          f"{args.repeats} alternated runs each")
    print("width_px  latent   md_s    mad_s   ratio  peak_rss_md_MiB  peak_rss_mad_MiB")
    stopped = None
    for width in args.widths:
        run(tiled, width)  # warm-up
        md, merged, rss_md, rss_mad = [], [], 0.0, 0.0
        for _ in range(args.repeats):
            md.append(run(tiled, width))
            rss_md = peak_rss_mib()
            merged.append(run(mad, width))
            rss_mad = peak_rss_mib()
        ratio = statistics.median(merged) / statistics.median(md)
        if ratio > 1.10 and stopped is None:
            stopped = width
        print(f"{width:8d}  {args.height // 8}x{width // 8:<4d} {statistics.median(md):7.2f} {statistics.median(merged):7.2f} "
              f"{ratio:6.3f}  {rss_md:15.0f}  {rss_mad:16.0f}")
    print("ratio <= 1.10 held at every width" if stopped is None else f"ratio <= 1.10 stops holding at {stopped} px")


if __name__ == "__main__":
    main()
