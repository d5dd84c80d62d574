"""Benchmark Vista Tiled Diffusion (issue [A], item 5).

Compares
  (a) Vista's tiled sampling wall time with the time of its UNet calls alone (measured in the
      same run by a DIFFUSION_MODEL wrapper around every network call): the ratio is Vista's
      own overhead (cropping, batching, fusion) — target <= 1.05;
  (b) Vista vs shiimizu/ComfyUI-TiledDiffusion in MultiDiffusion mode (the peer), identical
      windows, checkpoint, sampler and seed — target wall ratio <= 1.0 on CPU, <= 0.85 on a GPU.
      That pack patches ComfyUI globally on import, so each pack runs in its own host process;
      the processes go in ABBA order (vista, peer, peer, vista per round), each does one
      warm-up run and ``--repeats`` timed runs. Both packs' UNet-only times are printed beside
      their wall times, so machine noise (both columns move) can be told from a real gap.
Every run prints one line as it finishes; then medians, min–max and the ratios.

Usage::

    COMFYUI_PATH=/path/to/ComfyUI [TILED_DIFFUSION_PATH=/path/to/ComfyUI-TiledDiffusion] \\
        python bench/tiled.py [--ckpt PATH] [--pack PATH] [--rounds 1] [--repeats 2] [--width 768]
        [--height 256] [--window 256] [--stride 128] [--batch 4] [--steps 3]

The defaults are CPU-sized (256×768 px, 256 px windows, 3 steps, the random-weight SD1.5 test
checkpoint: a few minutes on 2 cores without the peer, about four times that with it); on a GPU
pass a real model and size, e.g. ``--ckpt sd15.safetensors --width 3072 --height 512 --window
512 --stride 128 --steps 20``. Sizes are image pixels. The peer pack is CC BY-NC-SA: it is
never vendored; point TILED_DIFFUSION_PATH at a checkout (without it only (a) is measured).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bench  # noqa: E402  (bench helpers; the host is imported lazily)

PEER = "peer TiledDiffusion"


def _patched(pack: str, model, args):
    if pack == "vista":
        bench.load_pack(args.pack)
        from vista.nodes.tiled_diffusion import VistaTiledDiffusion

        return VistaTiledDiffusion.execute(
            model, window_width=args.window, window_height=args.window, stride_x=args.stride, stride_y=args.stride,
            weight_mode="uniform", wrap_x=False, window_batch_size=args.batch).result[0]
    peer = bench.load_module("ComfyUI_TiledDiffusion", Path(os.environ["TILED_DIFFUSION_PATH"]), package=True)
    node = peer.tiled_diffusion.TiledDiffusion()
    return node.apply(model, "MultiDiffusion", args.window, args.window, args.window - args.stride, args.batch)[0]


def worker(args) -> None:
    """One pack in this process: one warm-up run, then ``--repeats`` timed runs; one JSON line per run."""
    host = bench.host_path("bench/tiled.py")
    comfy = bench.import_host(host)
    model, clip, ckpt_name = bench.load_checkpoint(comfy, host, args.ckpt)
    timer = bench.UnetTimer(comfy)
    timer.attach(model)  # before the pack clones it
    patched = _patched(args.worker, model, args)
    pack = args.pack if args.worker == "vista" else Path(os.environ["TILED_DIFFUSION_PATH"])
    print(json.dumps({"describe": bench.describe(host, pack, ckpt_name)}), flush=True)
    cond = bench.encode(clip, bench.PROMPT)
    latent = bench.empty_latent(patched, args.height, args.width)
    noise = comfy.sample.prepare_noise(latent, 0)
    for i in range(args.repeats + 1):
        run = bench.timed_run(args.worker, "warm-up" if i == 0 else str(i), lambda: comfy.sample.sample(
            patched, noise, args.steps, bench.CFG, "euler", "normal", cond, cond, latent, disable_pbar=True, seed=0),
            timer)
        print(json.dumps({"run": vars(run)}), flush=True)


def _run_worker(pack: str, process: int, args, first: bool) -> list[bench.Run]:
    """Start one worker process, print its runs as they arrive, return its timed runs."""
    cmd = [sys.executable, __file__, "--worker", pack, "--pack", str(args.pack), "--width", str(args.width),
           "--height", str(args.height), "--steps", str(args.steps), "--repeats", str(args.repeats),
           "--window", str(args.window), "--stride", str(args.stride), "--batch", str(args.batch)]
    if args.ckpt:
        cmd += ["--ckpt", str(args.ckpt)]
    side = "vista" if pack == "vista" else PEER
    runs = []
    with tempfile.TemporaryFile("w+") as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True) as proc:
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if "describe" in message and first:
                print(f"{side}: {message['describe']}", flush=True)
            if "run" in message:
                run = bench.Run(**{**message["run"], "side": side})
                run.index = f"p{process}.{'w' if run.index == 'warm-up' else run.index}"
                bench.print_run(run)
                if not run.index.endswith(".w"):
                    runs.append(run)
        if proc.wait():
            log.seek(0)
            raise SystemExit(f"bench worker {pack} failed:\n{log.read()[-3000:]}")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench.add_common_args(parser)
    parser.add_argument("--worker", choices=["vista", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=768, help="canvas width, px (default 768)")
    parser.add_argument("--height", type=int, default=256, help="canvas height, px (default 256)")
    parser.add_argument("--window", type=int, default=256, help="window size, px (default 256)")
    parser.add_argument("--stride", type=int, default=128,
                        help="window stride, px; the peer's overlap = window - stride (default 128)")
    parser.add_argument("--batch", type=int, default=4, help="windows per UNet call, both packs (default 4)")
    parser.add_argument("--steps", type=int, default=3, help="euler steps (default 3)")
    parser.add_argument("--repeats", type=bench.positive_int, default=2,
                        help="timed runs per worker process, after one warm-up (default 2)")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    bench.host_path("bench/tiled.py")
    packs = ["vista", "peer"] if os.environ.get("TILED_DIFFUSION_PATH") else ["vista"]
    order = bench.abba_order(packs, args.rounds) if len(packs) == 2 else packs * args.rounds
    print(f"canvas {args.height}x{args.width} px, window {args.window} px, stride {args.stride} px, {args.steps} euler "
          f"steps, cfg {bench.CFG}, batch {args.batch}; worker processes in order {', '.join(order)}, "
          f"each 1 warm-up + {args.repeats} timed runs" + ("" if len(packs) == 2 else
                                                          " (TILED_DIFFUSION_PATH unset: no peer)"))
    bench.print_table_header("runs (pN.i = process N, run i; w = warm-up, not in the summary)")
    results = {PEER: [], "vista": []} if len(packs) == 2 else {"vista": []}  # A = peer, B = vista
    for process, pack in enumerate(order, start=1):
        results["vista" if pack == "vista" else PEER] += _run_worker(pack, process, args, pack not in order[:process - 1])
    wall, unet = bench.summarise(results, "vista / peer", "target wall <= 1.0 on CPU, <= 0.85 on a GPU")
    vista = results["vista"]
    overhead = statistics.median(r.wall / r.unet for r in vista)
    print(f"(a) vista wall / UNet-only time: median {overhead:.3f} (target <= 1.05); UNet calls per run {vista[0].calls}")
    if PEER in results:
        peer_overhead = statistics.median(r.wall / r.unet for r in results[PEER])
        print(f"    peer wall / UNet-only time: median {peer_overhead:.3f}; UNet calls per run {results[PEER][0].calls}")
        print(f"(b) vista / TiledDiffusion(MultiDiffusion): wall {wall:.3f}, UNet {unet:.3f} "
              f"(target wall <= 1.0 on CPU, <= 0.85 on a GPU)")


if __name__ == "__main__":
    main()
