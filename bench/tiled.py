"""Benchmark Vista Tiled Diffusion (issue [A], item 5).

Prints
  (a) Vista's tiled sampling wall time ÷ the time of its UNet calls alone (measured in the same
      run by a DIFFUSION_MODEL wrapper around every network call) — target ≤ 1.05;
  (b) Vista ÷ shiimizu/ComfyUI-TiledDiffusion in MultiDiffusion mode, identical windows,
      checkpoint, sampler and seed, each pack in its own host process (that pack patches ComfyUI
      globally on import), processes alternated — target ≤ 1.0 on CPU, ≤ 0.85 on a GPU.

Usage::

    COMFYUI_PATH=/path/to/ComfyUI [TILED_DIFFUSION_PATH=/path/to/ComfyUI-TiledDiffusion] \\
        python bench/tiled.py [--width 1536] [--height 512] [--steps 4] [--rounds 2] [--repeats 2]

The peer pack is CC BY-NC-SA: it is never vendored; point TILED_DIFFUSION_PATH at a checkout
(without it only (a) is measured). The random-weight SD1.5 test checkpoint is built with
tools/make_test_checkpoint.py into VISTA_TEST_CACHE (default ~/.cache/vista-tests).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path, package: bool = False):
    location = path / "__init__.py" if package else path
    spec = importlib.util.spec_from_file_location(name, location, submodule_search_locations=[str(path)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _host_and_checkpoint(host: Path):
    tool = _load("vista_make_test_checkpoint", ROOT / "tools" / "make_test_checkpoint.py")
    comfy = tool._import_host(host)
    import comfy.patcher_extension
    import comfy.sample
    import comfy.sd

    cache = Path(os.environ.get("VISTA_TEST_CACHE", Path.home() / ".cache" / "vista-tests"))
    path = tool.make_checkpoint(cache, host)
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=True)
    return comfy, model, clip


def _patched(pack: str, model, window: int, stride: int, batch: int):
    if pack == "vista":
        _load("vista", ROOT, package=True)
        from vista.nodes.tiled_diffusion import VistaTiledDiffusion

        return VistaTiledDiffusion.execute(
            model, window_width=window, window_height=window, stride_x=stride, stride_y=stride,
            weight_mode="uniform", wrap_x=False, window_batch_size=batch).result[0]
    peer = _load("ComfyUI_TiledDiffusion", Path(os.environ["TILED_DIFFUSION_PATH"]), package=True)
    node = peer.tiled_diffusion.TiledDiffusion()
    return node.apply(model, "MultiDiffusion", window, window, window - stride, batch)[0]


def worker(args) -> None:
    """One pack in this process: warm-up, then timed runs; prints one JSON line."""
    import torch

    comfy, model, clip = _host_and_checkpoint(Path(os.environ["COMFYUI_PATH"]))
    patched = _patched(args.worker, model, args.window, args.stride, args.batch)
    unet = {"seconds": 0.0, "calls": 0}

    def timed(executor, *a, **kw):
        start = time.perf_counter()
        out = executor(*a, **kw)
        unet["seconds"] += time.perf_counter() - start
        unet["calls"] += 1
        return out

    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "vista_bench_timer", timed)
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a panorama of a mountain lake"))
    latent = torch.zeros(1, 4, args.height // 8, args.width // 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    runs = []
    for i in range(args.repeats + 1):  # the first run warms up and is dropped
        unet.update(seconds=0.0, calls=0)
        start = time.perf_counter()
        out = comfy.sample.sample(patched, noise, args.steps, 5.0, "euler", "normal", cond, cond, latent,
                                  disable_pbar=True, seed=0)
        wall = time.perf_counter() - start
        if i:
            runs.append({"wall": wall, "unet": unet["seconds"], "calls": unet["calls"]})
    print(json.dumps({"pack": args.worker, "runs": runs, "checksum": float(out.double().abs().mean())}))


def _run_worker(pack: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", pack, "--width", str(args.width), "--height", str(args.height),
           "--steps", str(args.steps), "--repeats", str(args.repeats), "--window", str(args.window),
           "--stride", str(args.stride), "--batch", str(args.batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"bench worker {pack} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=["vista", "peer"])
    parser.add_argument("--width", type=int, default=1536, help="canvas width, px")
    parser.add_argument("--height", type=int, default=512, help="canvas height, px")
    parser.add_argument("--window", type=int, default=512, help="window size, px")
    parser.add_argument("--stride", type=int, default=128, help="window stride, px (peer overlap = window - stride)")
    parser.add_argument("--batch", type=int, default=4, help="windows per UNet call (both packs)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per worker process (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="alternated vista/peer process pairs")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not os.environ.get("COMFYUI_PATH"):
        raise SystemExit("bench/tiled.py: set COMFYUI_PATH to a ComfyUI checkout")
    packs = ["vista", "peer"] if os.environ.get("TILED_DIFFUSION_PATH") else ["vista"]
    results = {p: [] for p in packs}
    for round_ in range(args.rounds):  # ABBA order: neither pack always runs first
        for pack in packs if round_ % 2 == 0 else packs[::-1]:
            results[pack] += _run_worker(pack, args)["runs"]
    vista = results["vista"]
    overhead = statistics.median(r["wall"] / r["unet"] for r in vista)
    print(f"canvas {args.width}x{args.height} px, window {args.window} px, stride {args.stride} px, "
          f"{args.steps} euler steps, batch {args.batch}; {len(vista)} timed runs per pack")
    print(f"(a) vista wall / UNet-only time: median {overhead:.3f} (target <= 1.05); "
          f"wall median {statistics.median(r['wall'] for r in vista):.2f}s, UNet calls per run {vista[0]['calls']}")
    for pack, runs in results.items():
        print(f"    {pack} wall per run: " + ", ".join(f"{r['wall']:.2f}s" for r in runs))
    if "peer" in results:
        peer = results["peer"]
        ratio = statistics.median(r["wall"] for r in vista) / statistics.median(r["wall"] for r in peer)
        print(f"(b) vista / TiledDiffusion(MultiDiffusion) wall: {ratio:.3f} (target <= 1.0 CPU, <= 0.85 GPU); "
              f"peer wall median {statistics.median(r['wall'] for r in peer):.2f}s, "
              f"peer UNet calls per run {peer[0]['calls']}")


if __name__ == "__main__":
    main()
