"""Peak memory of Vista MAD Attention against MultiDiffusion (issue [F] 2); before/after with ``--pack``.

For each canvas width, in ONE process with the same checkpoint, seed and windows, one euler step at cfg 5
(memory does not depend on the step count) of

    A   Vista Tiled Diffusion (MultiDiffusion), ``--batch`` windows per model call;
    A*  the same with every window in one call: the batch MAD needs, without the merge;
    B   A* + Vista MAD Attention (tau 1: merged on that step).

One line per run: wall seconds, the peak of live tensor bytes allocated during the run (a
``TorchDispatchMode`` that counts every storage an op allocates until it is freed: exact, device-free), the
peak RSS (VmHWM, reset per run; GPU: max allocated) and, when the pack has ``nodes/budget.py``, Vista's own
estimate of the largest call (``core/canvas/budget.py``). Then, per width, B ÷ A* (what the merge itself adds) and
B ÷ A. A second table times nothing: one merged self-attention call against the host's attention over
the same window tokens (``optimized_attention``, torch SDPA), q/k/v shaped like the checkpoint's finest
attention level, peak tensor bytes. ``--huge`` also sends a 16384² px MAD request and reports how it ends
(error type and first words, seconds, peak RSS): the "can't allocate 81920000000 bytes" of issue [F] 2.

Usage::

    COMFYUI_PATH=/path/to/ComfyUI python bench/mad_memory.py [--ckpt PATH] [--pack PATH]
        [--widths 1024 2048] [--height 512] [--window 512] [--stride 128] [--batch 4] [--huge]

Defaults: the random-weight SD1.5 test checkpoint, 512 px high canvases 1024 and 2048 px wide, 512 px windows
at stride 128 px (a couple of minutes on 2 CPU cores). Before/after: ``git worktree add /tmp/before <commit>``
and run once with ``--pack /tmp/before``. Sizes are image pixels.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bench  # noqa: E402  (bench helpers; the host is imported lazily)

MIB = 2 ** 20


def peak_counter():
    """A TorchDispatchMode counting the peak bytes of storages allocated inside it and alive at once (the same
    counter as the memory tests': tests/support/peak_bytes.py)."""
    return bench.load_module("vista_peak_bytes", bench.ROOT / "tests" / "support" / "peak_bytes.py").PeakBytes()


def measure(label: str, fn, extra: str = "") -> float:
    """Run ``fn`` once under the counter; print one line and return the peak tensor MiB."""
    counter = peak_counter()
    bench.reset_peak_memory()
    start = time.perf_counter()
    with counter:
        fn()
    bench.sync()
    wall, rss = time.perf_counter() - start, bench.peak_memory_mib()
    print(f"  {label:<40} {wall:8.1f} {counter.peak / MIB:15.0f} {rss:12.0f}  {extra}", flush=True)
    return counter.peak / MIB


def estimate_mib(model, height: int, width: int, args, mad: bool) -> str:
    """The pack's own estimate of the largest call (one conditioning x2 for cfg), or '-' when it has none."""
    try:
        from vista.core.canvas.budget import estimate_canvas_budget, merged_attention_bytes, unet_window_elements
        from vista.core.canvas.windows import plan_windows
        from vista.nodes.budget import unet_geometry
    except ImportError:
        return "-"
    import torch

    f = bench.latent_factor(model)
    geometry = unet_geometry(model.get_model_object("diffusion_model"))
    n = len(plan_windows(height // f, width // f, args.window // f, args.window // f, args.stride // f, args.stride // f))
    itemsize = torch.empty((), dtype=model.model_dtype()).element_size()
    budget = estimate_canvas_budget(
        window_bytes=unet_window_elements(geometry, (args.window // f,) * 2) * itemsize, windows_per_step=n,
        windows_per_call=n, conditionings=2,
        merged_bytes=merged_attention_bytes(geometry, (height // f, width // f), 2, itemsize) if mad else 0)
    return f"{budget.total_bytes / MIB:.0f}"


def attention_table(comfy, model, args) -> None:
    """One merged self-attention call vs the host's attention on the same window tokens (peak tensor MiB)."""
    import functools

    import torch
    from vista.core.mad.attention_merge import merged_self_attention, token_index
    from vista.core.canvas.windows import plan_windows

    dm, f = model.get_model_object("diffusion_model"), bench.latent_factor(model)
    first = next(i for i, block in enumerate(dm.input_blocks)  # the first input block with attention: the finest level
                 if any(type(layer).__name__ == "SpatialTransformer" for layer in block))
    scale = 2 ** sum(any(type(x).__name__ == "Downsample" for x in block) for block in dm.input_blocks[:first])
    channels = next(layer.in_channels for layer in dm.input_blocks[first] if type(layer).__name__ == "SpatialTransformer")
    heads = next(m.heads for m in dm.input_blocks[first].modules() if type(m).__name__ == "CrossAttention")
    attention = functools.partial(comfy.ldm.modules.attention.optimized_attention, heads=heads)
    print(f"\nmerged self-attention vs the host's attention on the same window tokens (level scale {scale}, "
          f"{channels} channels, {heads} heads, 2 conditionings, float32)")
    print(f"  {'canvas':<40} {'wall_s':>8} {'peak_tensor_MiB':>15} {'peak_rss_MiB':>12}")
    for width in args.widths:
        hw = (args.height // f, width // f)
        windows = plan_windows(*hw, args.window // f, args.window // f, args.stride // f, args.stride // f, align=scale)
        block = (args.window // f // scale,) * 2
        idx = token_index(windows, hw, block)
        q, k, v = torch.randn(3, 2 * len(windows), block[0] * block[1], channels)
        windowed = measure(f"{args.height}x{width} host attention, windows", lambda: attention(q, k, v))
        merged = measure(f"{args.height}x{width} merged ({len(windows)} windows)",
                         lambda: merged_self_attention(q, k, v, idx, 1, attention))
        print(f"  ratio merged / windowed attention: {merged / windowed:.2f} (q alone {q.numel() * 4 / MIB:.0f} MiB)")


def huge(comfy, model, cond, args) -> None:
    """A 16384² px MAD request: how it ends (error, seconds, peak RSS)."""
    from vista.nodes.mad import VistaMADAttention
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    tiled = VistaTiledDiffusion.execute(model, window_width=args.window, window_height=args.window, stride_x=args.stride,
                                        stride_y=args.stride, weight_mode="uniform", wrap_x=False,
                                        window_batch_size=args.batch).result[0]
    mad = VistaMADAttention.execute(tiled, tau=0.3, input_blocks=True, middle_block=True, output_blocks=True).result[0]
    latent = bench.empty_latent(mad, 16384, 16384)
    noise = comfy.sample.prepare_noise(latent, 0)
    bench.reset_peak_memory()
    start = time.perf_counter()
    try:
        comfy.sample.sample(mad, noise, 2, bench.CFG, "euler", "normal", cond, cond, latent, disable_pbar=True, seed=0)
        outcome = "sampled (!)"
    except (ValueError, RuntimeError, MemoryError) as e:
        outcome = f"{type(e).__name__}: {str(e)[:160]}"
    print(f"\n16384x16384 px + MAD: {time.perf_counter() - start:.1f} s, peak RSS {bench.peak_memory_mib():.0f} MiB -> "
          f"{outcome}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench.add_common_args(parser)
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048], help="canvas widths, px (default 1024 2048)")
    parser.add_argument("--height", type=int, default=512, help="canvas height, px (default 512)")
    parser.add_argument("--window", type=int, default=512, help="window size, px (default 512)")
    parser.add_argument("--stride", type=int, default=128, help="window stride, px (default 128)")
    parser.add_argument("--batch", type=int, default=4, help="windows per call for side A (default 4)")
    parser.add_argument("--huge", action="store_true", help="also send a 16384² px MAD request")
    args = parser.parse_args()
    host = bench.host_path("bench/mad_memory.py")
    comfy = bench.import_host(host)
    model, clip, ckpt_name = bench.load_checkpoint(comfy, host, args.ckpt)
    bench.load_pack(args.pack)
    import comfy.ldm.modules.attention  # noqa: F401
    from vista.nodes.mad import VistaMADAttention
    from vista.nodes.tiled_diffusion import VistaTiledDiffusion

    def tiled(batch: int):
        return VistaTiledDiffusion.execute(model, window_width=args.window, window_height=args.window, stride_x=args.stride,
                                           stride_y=args.stride, weight_mode="uniform", wrap_x=False,
                                           window_batch_size=batch).result[0]

    all_in_one = tiled(256)
    sides = {"A MultiDiffusion": tiled(args.batch), "A* MultiDiffusion, one call": all_in_one,
             "B MAD tau=1": VistaMADAttention.execute(all_in_one, tau=1.0, input_blocks=True, middle_block=True,
                                                      output_blocks=True).result[0]}
    cond = bench.encode(clip, bench.PROMPT)

    def sampling(patched, width: int):
        latent = bench.empty_latent(patched, args.height, width)
        noise = comfy.sample.prepare_noise(latent, 0)
        return lambda: comfy.sample.sample(patched, noise, 1, bench.CFG, "euler", "normal", cond, cond, latent,
                                           disable_pbar=True, seed=0)

    print(bench.describe(host, args.pack, ckpt_name))
    print(f"1 euler step, cfg {bench.CFG}, window {args.window} px, stride {args.stride} px, A batch {args.batch}")
    measure("warm-up (loads the model)", sampling(sides["A MultiDiffusion"], args.window))
    summary = []
    for width in args.widths:
        print(f"\ncanvas {args.height}x{width} px")
        print(f"  {'side':<40} {'wall_s':>8} {'peak_tensor_MiB':>15} {'peak_rss_MiB':>12}  estimate_MiB")
        peaks = {}
        for side, patched in sides.items():
            estimate = "" if side.startswith("A ") else estimate_mib(model, args.height, width, args, side.startswith("B"))
            peaks[side] = measure(side, sampling(patched, width), estimate)
        a, a_all, b = peaks.values()
        summary.append((width, b / a_all, b / a))
    print("\nwidth_px  MAD/A*(same batch)  MAD/A(batch %d)   (peak tensor bytes)" % args.batch)
    for width, same, batched in summary:
        print(f"{width:8d}  {same:18.3f}  {batched:15.3f}")
    attention_table(comfy, model, args)
    if args.huge:
        huge(comfy, model, cond, args)


if __name__ == "__main__":
    main()
