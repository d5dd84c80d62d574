"""Measure the zoom stack's seams and video level switches before/after Vista Zoom Composite.

Generative Powers of Ten (Wang et al. 2024). The Zoom Stack Sampler makes the levels consistent
in latent space; the decoded images disagree (a VAE is not linear). Samples one stack through
SamplerCustomAdvanced's path with the Vista zoom nodes, decodes it, and prints:

(a) seam ratio per level (core/zoom_metrics.seam_ratio): the strongest contour within
    ``--feather`` px of the pasted centre block's edge ÷ the gradient of the same rows/columns
    beyond — for Alg. 1's hard paste (Composite with feather 0) and for the feathered composite;
(b) video switch-jump ratio (core/zoom_metrics.switch_jump_ratio): the frame-to-frame change of
    the pixels a level's edge sweeps over ÷ the median frame-to-frame change — "before" is the
    hard-edged video of the raw decoded levels (the previous Zoom Video), "after" the feathered
    video of the composited levels; plus the whole-frame hand-over ratio (handover_ratio).
Ratios near 1 mean nothing special at the seam / switch.

Usage::

    COMFYUI_PATH=/path/to/ComfyUI python bench/zoom_seams.py [--ckpt PATH] [--pack PATH]
        [--levels 4] [--size 256] [--steps 3] [--zoom-factor 2] [--feather 8] [--frames-per-level 12]

Defaults: the random-weight SD1.5 test checkpoint (its decoded levels are texture, not
pictures), 4 levels of 256 px, 3 steps — about a minute on 2 CPU cores. ``--size`` is image px.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bench  # noqa: E402  (bench helpers; the host is imported lazily)

PROMPTS = ["a spiral galaxy", "a solar system", "a blue planet", "a coastal city at night", "a street",
           "a cafe table", "a coffee cup", "coffee foam bubbles"]


def load(comfy, host: Path, ckpt: Path | None):
    """(model, clip, vae) of ``ckpt`` or of the test checkpoint (built into ``$VISTA_TEST_CACHE``)."""
    ckpt = bench.checkpoint_path(host, ckpt)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=True)
    return model, clip, vae


def decoded_stack(comfy, model, clip, vae, args):
    """Sample the stack with the Vista zoom nodes (SamplerCustomAdvanced's path) and decode it: IMAGE (N, H, W, C)."""
    import torch
    from vista.nodes import zoom as nodes

    zoom, levels = nodes.VistaZoomSettings.execute(str(args.zoom_factor), args.levels).result
    positive = nodes.VistaZoomPrompts.execute(zoom, clip, "\n".join((PROMPTS * levels)[:levels])).result[0]
    sampler = nodes.VistaZoomStackSampler.execute(zoom, 1.0, 1.0, 5, 0.1, 0.8).result[0]
    noise = nodes.VistaZoomNoise.execute(zoom, args.seed).result[0]
    latent = torch.zeros(levels, 4, args.size // 8, args.size // 8)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, clip.encode_from_tokens_scheduled(clip.tokenize("")))
    guider.set_cfg(5.0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", args.steps)
    stack = guider.sample(noise.generate_noise({"samples": latent}), latent, sampler, sigmas, disable_pbar=True,
                          seed=noise.seed)
    return nodes, zoom, vae.decode(stack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=None, help="checkpoint (UNet + CLIP + VAE); default: test checkpoint")
    parser.add_argument("--pack", type=Path, default=bench.ROOT, help="Vista checkout (default: this repository)")
    parser.add_argument("--levels", type=int, default=4, help="zoom levels N (default 4)")
    parser.add_argument("--size", type=int, default=256, help="image px per side of every level (default 256)")
    parser.add_argument("--steps", type=int, default=3, help="sampling steps (default 3)")
    parser.add_argument("--zoom-factor", type=int, default=2, choices=(2, 4), help="zoom p between levels (default 2)")
    parser.add_argument("--feather", type=int, default=8, help="feather of Composite and Video, image px (default 8)")
    parser.add_argument("--frames-per-level", type=int, default=12, help="video frames per level (default 12)")
    parser.add_argument("--seed", type=int, default=7, help="noise seed (default 7)")
    args = parser.parse_args()
    host = bench.host_path("bench/zoom_seams.py")
    comfy = bench.import_host(host)
    model, clip, vae = load(comfy, host, args.ckpt)
    bench.load_pack(args.pack)
    import torch
    from vista.bench.evaluation.zoom_metrics import handover_ratio, seam_ratio, source_levels, switch_jump_ratio

    print("$ " + shlex.join(["python", *sys.argv]))
    print(bench.describe(host, args.pack, args.ckpt.name if args.ckpt else "vista test checkpoint"))
    with torch.inference_mode():
        nodes, zoom, images = decoded_stack(comfy, model, clip, vae, args)
        n, p, f, fpl = args.levels, args.zoom_factor, args.feather, args.frames_per_level
        hard = nodes.VistaZoomComposite.execute(images, zoom, 0).result[0]
        soft = nodes.VistaZoomComposite.execute(images, zoom, f).result[0]
        seams = [(seam_ratio(hard[i].permute(2, 0, 1), p, f), seam_ratio(soft[i].permute(2, 0, 1), p, f))
                 for i in range(n - 1)]
        before = nodes.VistaZoomVideo.execute(images, zoom, fpl, 0).result[0]
        after = nodes.VistaZoomVideo.execute(soft, zoom, fpl, f).result[0]
    print(f"stack: {n} levels of {args.size}x{args.size} px, p={p}, {args.steps} steps, feather {f} px")
    print("(a) seam ratio per level i < N-1 (hard paste -> feathered):  "
          + ", ".join(f"L{i} {h:.3f} -> {s:.3f}" for i, (h, s) in enumerate(seams)))
    print(f"    mean: hard paste {statistics.mean(h for h, _ in seams):.3f}, "
          f"feathered {statistics.mean(s for _, s in seams):.3f}")
    sources = source_levels(n, p, fpl, *images.shape[1:3])
    print(f"(b) video ({before.shape[0]} frames, {fpl} per level): switch-jump ratio before (raw levels, hard edges) "
          f"{switch_jump_ratio(before, sources):.3f} -> after (composited, feathered) {switch_jump_ratio(after, sources):.3f}")
    print(f"    whole-frame hand-over ratio: before {handover_ratio(before, fpl):.3f} -> after {handover_ratio(after, fpl):.3f}")


if __name__ == "__main__":
    main()
