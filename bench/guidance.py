"""Benchmark SyncDiffusion and Multi-Scale Diffusion against MultiDiffusion (issue [D], verification 5).

Runs, in ONE process with the same checkpoint, canvas, windows, sampler (Vista Latent Fusion Sampler,
eta 0 = DDIM/euler, guided weights), normal schedule, prompt, cfg and seed, the baseline
A = MultiDiffusion (the sampler without guidance) and the guided configurations:

  sync-vae-all     Vista SyncDiffusion, the model's VAE as decoder, every step guided (paper f = 50 of 50)
  sync-vae-1in5    the same, 1 in 5 steps guided (guided_steps = steps / 5; paper f = 10 of 50)
  sync-taesd-all   Vista SyncDiffusion, TAESD from ComfyUI's vae_approx folder, every step guided
  sync-taesd-1in5  the same, 1 in 5 steps guided
  msd-0.3          Vista Multi-Scale Diffusion, paper defaults: levels 2, weight 10, guided_fraction 0.3
  msd-1.0          the same with guided_fraction 1.0 (every step guided: the guided-step cost is visible
                   with few steps)

SyncDiffusion uses the paper's weight 20, decay 0.95 and AlexNet LPIPS. The runs go in ABBA order
over all sides (A, B, C, …, C, B, A per round), one printed line per run as it finishes: wall
seconds; seconds inside the diffusion model (the UNet) in forward calls and, for the gradient
passes, in its backward (timed by autograd hooks on the network's input and output); the rest
(other_s: decoder forward and backward, LPIPS, weight copies, fusion); UNet forward calls; and the
run's peak memory (CPU: peak RSS of the process during the run, heap trimmed and the high-water
mark reset before each run; GPU: torch.cuda.max_memory_allocated) and its growth over the run's
start (+MiB: activations, graphs and the weight copies the guidance holds). Then per side the
medians, min–max, and the side ÷ MultiDiffusion ratio of the wall medians and of the UNet medians
(forward + backward over MultiDiffusion's forward), beside the floor: a guided step costs at least
a gradient forward, a backward and the re-forward of the moved latent, ≈ 4 UNet passes per window
(Sync adds the anchor's prediction, 1/N of a step; MSD the low level's MultiDiffusion step, N1/N),
so floor = 1 + (3 + extra) · guided/steps, e.g. every step guided: floor ≈ 4×.

Paper anchors (SyncDiffusion supp. Tab. 3, A100, 512×3072 px, 50 steps): MD 46.1 s, f = 10
104.8 s (2.27×), f = 50 339.5 s (7.37×). Goals, judged on a GPU (the VAE's cost relative to the
UNet differs on CPU; on CPU the ratios are reported as measured): f = 50 ≤ 6× with the VAE and
≤ 4× with TAESD; f = 10 ≤ 2.0× with the VAE.

TAESD: the user normally has ``models/vae_approx/taesd_decoder.safetensors``; when the host has no
TAESD decoder for the model's latent family (offline), the bench builds a random-weight one from
the host's ``comfy.taesd.taesd.TAESD`` class into a temporary folder registered as ``vae_approx``
with ``folder_paths.add_model_folder_path``, and says so. The random-weight SD1.5 test checkpoint's
own VAE is a TAESD, so there the vae and taesd sides decode with the same architecture; the
VAE/TAESD contrast needs a checkpoint with the standard VAE (tools/make_full_sd15.py).

Usage::

    COMFYUI_PATH=/path/to/ComfyUI python bench/guidance.py [--ckpt PATH] [--pack PATH] [--rounds 1]
        [--width 512] [--height 512] [--window 256] [--stride 256] [--batch 4] [--steps 5] [--seed 0]
        [--configs sync-vae-all sync-vae-1in5 sync-taesd-all sync-taesd-1in5 msd-0.3 msd-1.0]
        [--warmup baseline|all|none]

The defaults are CPU-sized (512×512 px, 2×2 windows of 256 px, 5 steps, all configurations, the
random-weight SD1.5 test checkpoint: ~5 minutes on 2 idle cores, 18 minutes measured with other
jobs sharing them; ``--stride 128`` overlaps the windows, 3×3 = 9 of them, ~2× the time). The
1-in-5 sides need --steps >= 5; MSD needs the half canvas to hold a window (width and height
>= 2 × window). Per-step costs do not depend on sigma, so the summary also derives the paper's
partial schedules at 50 steps (f = 10; MSD's first 30 %) from each every-step ratio, and checks
that derivation against a measured partial side when one ran.

Full-architecture SD1.5 on CPU (build it first, ~2 GB, outside the repository:
``python tools/make_full_sd15.py ~/.cache/vista-bench``). With the SD VAE a guided step costs
~20–40 s per 192 px window on 2 cores (decoder forward and backward, LPIPS, UNet forward and
backward), so keep the canvas small and guide every step: 2×2 windows of 192 px (MSD's half level
holds one), 1 step, ~6 minutes on 2 idle cores (14 minutes measured with other jobs)::

    COMFYUI_PATH=... python bench/guidance.py --ckpt ~/.cache/vista-bench/vista_full_sd15.safetensors \\
        --width 384 --height 384 --window 192 --stride 192 --steps 1 \\
        --configs sync-vae-all sync-taesd-all msd-1.0

On a GPU, the paper's geometry with a real SD1.5: ``--ckpt sd15.safetensors --width 3072 --height 512
--window 512 --stride 128 --steps 50 --batch 8 --configs sync-vae-all sync-vae-1in5 sync-taesd-all
sync-taesd-1in5`` (MSD needs a 2-D canvas, e.g. ``--width 2048 --height 1024``). Sizes are image pixels.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bench  # noqa: E402  (bench helpers; the host is imported lazily)

SYNC = {"weight": 20.0, "decay": 0.95, "lpips_net": "alex"}
MSD = {"levels": 2, "weight": 10.0, "noise_level": "faithful (paper)"}
CONFIGS = ("sync-vae-all", "sync-vae-1in5", "sync-taesd-all", "sync-taesd-1in5", "msd-0.3", "msd-1.0")
BASELINE = "A MultiDiffusion"
REFERENCE = {
    "sync-vae-all": "paper f=50: 7.37x; goal <= 6x (GPU)",
    "sync-vae-1in5": "paper f=10: 2.27x; goal <= 2.0x (GPU)",
    "sync-taesd-all": "goal <= 4x (GPU)",
}


@dataclass(frozen=True)
class Side:
    """One configuration: its label, guidance spec (None = MultiDiffusion), guided steps and floor."""

    name: str
    label: str
    guidance: object
    guided: int
    floor: float


@dataclass
class Row:
    side: str
    index: str  # "warm-up" or the timed run's number
    wall: float
    fwd: float
    bwd: float
    calls: int
    peak: float
    extra: float


class DecoderOnlyTaesd(logging.Filter):
    """Drops ComfyUI's "Missing VAE keys ['taesd_encoder…" warning: the guidance loads a decoder-only
    TAESD file (the usual vae_approx content) on every run, which would interleave the per-run lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Missing VAE keys") and "taesd_encoder." in message
                    and "taesd_decoder." not in message)


class GradUnetTimer(bench.UnetTimer):
    """:class:`bench.UnetTimer` (forward seconds and calls) plus the UNet's backward seconds.

    A forward that records a graph gets two hooks: one on its output (autograd reached the network:
    start) and one on its input (the network's backward is done: stop).
    """

    def reset(self) -> None:
        super().reset()
        self.backward = 0.0

    @staticmethod
    def _now() -> float:
        bench.sync()
        return time.perf_counter()

    def _wrapper(self, executor, *args, **kwargs):
        out = super()._wrapper(executor, *args, **kwargs)
        x = args[0] if args else None
        if getattr(x, "requires_grad", False) and getattr(out, "requires_grad", False):
            started: list[float] = []
            out.register_hook(lambda grad: started.append(self._now()))
            x.register_hook(lambda grad: self._stop(started))
        return out

    def _stop(self, started: list[float]) -> None:
        if started:
            self.backward += self._now() - started[0]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench.add_common_args(parser)
    parser.add_argument("--width", type=int, default=512, help="canvas width, px (default 512)")
    parser.add_argument("--height", type=int, default=512, help="canvas height, px (default 512)")
    parser.add_argument("--window", type=int, default=256, help="window size, px (default 256)")
    parser.add_argument("--stride", type=int, default=256, help="window stride, px (default 256)")
    parser.add_argument("--batch", type=bench.positive_int, default=4, help="windows per UNet call (default 4)")
    parser.add_argument("--steps", type=bench.positive_int, default=5, help="sampling steps (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS),
                        help="guided configurations to compare with MultiDiffusion (default: all)")
    parser.add_argument("--warmup", choices=("all", "baseline", "none"), default="baseline",
                        help="untimed warm-up run of every side, of MultiDiffusion only (it loads the model), "
                             "or none (default baseline: the guided sides redo their setup on every run anyway)")
    args = parser.parse_args()
    if args.steps < 5 and any(c.endswith("1in5") for c in args.configs):
        parser.error(f"the 1-in-5 configurations need --steps >= 5 (got {args.steps}); drop them with --configs")
    if any(c.startswith("msd") for c in args.configs) and min(args.width, args.height) < 2 * args.window:
        parser.error(f"MSD needs the half canvas to hold a window: width and height >= 2 x window = {2 * args.window} px "
                     f"(got {args.width}x{args.height}); enlarge the canvas or drop msd-* with --configs")
    return args


def window_counts(args, factor: int) -> tuple[int, int]:
    """(N windows on the canvas, N1 windows on MSD's half-resolution level)."""
    from vista.core.canvas.windows import plan_windows

    h, w, win, stride = args.height // factor, args.width // factor, args.window // factor, args.stride // factor
    n = len(plan_windows(h, w, win, win, stride, stride))
    n1 = len(plan_windows(h // 2, w // 2, win, win, stride, stride)) if min(h, w) >= 2 * win else 0
    return n, n1


def make_sides(args, vae, n: int, n1: int) -> list[Side]:
    """The baseline and the selected guided configurations, with their guided-step counts and floors."""
    from vista.core.sampling.schedules import steps_in_fraction, uniform_steps
    from vista.nodes.guidance import VistaMultiScaleDiffusion, VistaSyncDiffusion

    T = args.steps
    sides = [Side("md", BASELINE, None, 0, 1.0)]
    for name in args.configs:
        if name.startswith("sync"):
            decoder, every = name.split("-")[1], name.endswith("all")
            guided_steps = T if every else T // 5
            spec = VistaSyncDiffusion.execute(guided_steps=guided_steps, decoder=decoder, vae=vae, **SYNC).result[0]
            guided, extra = len(uniform_steps(guided_steps, T)), 1 / n
            label = f"Sync {decoder} {guided}/{T} guided"
        else:
            fraction = float(name.split("-")[1])
            spec = VistaMultiScaleDiffusion.execute(guided_fraction=fraction, **MSD).result[0]
            guided, extra = steps_in_fraction(fraction, T), n1 / n
            label = f"MSD frac {fraction} {guided}/{T} guided"
        sides.append(Side(name, label, spec, guided, 1 + (3 + extra) * guided / T))
    return sides


def taesd_note(model, tool, configs: list[str], tmp: Path) -> str:
    """Where the TAESD decoder comes from: the host's vae_approx folder, or a random-weight one built here."""
    if not any("taesd" in c for c in configs):
        return "TAESD: not used"
    import folder_paths
    import torch

    import comfy.taesd.taesd
    from safetensors.torch import save_file

    fmt = model.get_model_object("latent_format")
    name = getattr(fmt, "taesd_decoder_name", None)
    if name is None:
        raise SystemExit(f"the checkpoint's latent format {type(fmt).__name__} has no TAESD decoder; drop sync-taesd-*")
    found = [f for f in folder_paths.get_filename_list("vae_approx") if f.startswith(name + ".")]
    if found:
        return f"TAESD decoder: {folder_paths.get_full_path('vae_approx', found[0])} (the host's vae_approx folder)"
    decoder = comfy.taesd.taesd.TAESD(latent_channels=fmt.latent_channels).taesd_decoder
    weights = tool._randomised_state_dict(decoder, "", torch.Generator().manual_seed(tool.SEED), gain=1.0)
    save_file(weights, str(tmp / f"{name}.safetensors"))
    folder_paths.add_model_folder_path("vae_approx", str(tmp))
    return (f"TAESD decoder: no {name} in the host's vae_approx folder (offline), so a RANDOM-WEIGHT one was built "
            f"from the host's comfy.taesd.taesd.TAESD class into the temporary vae_approx folder {tmp} (same cost as "
            f"the real one)")


def print_header() -> None:
    print(f"  {'side':<28} {'run':>7} {'wall_s':>8} {'unet_fwd_s':>10} {'unet_bwd_s':>10} {'other_s':>8} "
          f"{'unet_calls':>10} {'peak_MiB':>9} {'+MiB':>7}", flush=True)


def timed_run(side: Side, index: str, fn: Callable[[], object], timer: GradUnetTimer) -> Row:
    start_mib = bench.reset_peak_memory()
    timer.reset()
    bench.sync()
    start = time.perf_counter()
    fn()
    bench.sync()
    wall = time.perf_counter() - start
    peak = bench.peak_memory_mib()
    row = Row(side.label, index, wall, timer.seconds, timer.backward, timer.calls, peak, peak - start_mib)
    print(f"  {row.side:<28} {row.index:>7} {row.wall:8.2f} {row.fwd:10.2f} {row.bwd:10.2f} "
          f"{row.wall - row.fwd - row.bwd:8.2f} {row.calls:10d} {row.peak:9.0f} {row.extra:7.0f}", flush=True)
    return row


def run_abba(sides: list[Side], fns: dict[str, Callable[[], object]], rounds: int, warmup: str,
             timer: GradUnetTimer) -> dict[str, list[Row]]:
    """Warm-ups (untimed in the summary), then ``rounds`` × A B … B A over every side; one line per run."""
    print_header()
    for side in sides if warmup == "all" else sides[:1] if warmup == "baseline" else []:
        timed_run(side, "warm-up", fns[side.name], timer)
    by_name = {side.name: side for side in sides}
    runs: dict[str, list[Row]] = {side.name: [] for side in sides}
    for name in bench.abba_order(list(by_name), rounds):
        runs[name].append(timed_run(by_name[name], str(len(runs[name]) + 1), fns[name], timer))
    return runs


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def summarise(sides: list[Side], runs: dict[str, list[Row]], steps: int) -> dict[str, float]:
    """Medians per side, and each side's wall and UNet ratios to MultiDiffusion beside its floor.

    Returns the wall ratio of every side."""
    base = runs["md"]
    base_wall = statistics.median(r.wall for r in base)
    base_unet = statistics.median(r.fwd for r in base)
    print(f"\n  {'summary':<28} {'runs':>4} {'wall_s median [min-max]':>24} {'unet_fwd+bwd_s':>14} {'other_s':>8} "
          f"{'peak_MiB':>9} {'+MiB':>6} {'bwd/step':>8} {'wall_x':>7} {'unet_x':>7} {'floor_x':>7}  paper / goal")
    ratios = {}
    for side in sides:
        rs = runs[side.name]
        wall = statistics.median(r.wall for r in rs)
        unet = statistics.median(r.fwd + r.bwd for r in rs)
        other = statistics.median(r.wall - r.fwd - r.bwd for r in rs)
        bwd = statistics.median(r.bwd for r in rs) / (base_unet / steps) / side.guided if side.guided else 0.0
        ratios[side.name] = wall / base_wall
        print(f"  {side.label:<28} {len(rs):>4} {_spread([r.wall for r in rs]):>24} {unet:14.2f} {other:8.2f} "
              f"{max(r.peak for r in rs):9.0f} {max(r.extra for r in rs):6.0f} {bwd:8.2f} {wall / base_wall:7.2f} "
              f"{unet / base_unet:7.2f} {side.floor:7.2f}  {REFERENCE.get(side.name, '-')}", flush=True)
    print(f"  wall_x, unet_x: medians / MultiDiffusion's (unet_x: UNet forward + backward seconds over MultiDiffusion's "
          f"forward seconds). floor_x: 1 + (3 + extra) x guided/{steps}: a guided step = gradient forward + backward "
          f"(~2 passes) + re-forward = ~4 UNet passes per window, extra = Sync's anchor prediction (1/N) or MSD's "
          f"low-level step (N1/N); every step guided: floor ~4x. bwd/step: the UNet backward per guided step, in "
          f"MultiDiffusion steps of UNet forward (the guidance needs input gradients only, no weight gradients, so it "
          f"can be ~1 rather than the floor's 2).")
    return ratios


def print_derived(ratios: dict[str, float], sides: list[Side], steps: int) -> None:
    """The paper's partial schedules at 50 steps, derived from the measured every-step ratios.

    Every step costs the same UNet work whatever its sigma, so a run with a fraction q of its steps
    guided costs 1 + (r_every − 1)·q of MultiDiffusion; where the partial side was run too, the
    same formula at this run's steps is printed beside its measured ratio, as a check."""
    derived = (("sync-vae-all", "Sync vae f=10 of 50", 10, "sync-vae-1in5", "paper 2.27x; goal <= 2.0x (GPU)"),
               ("sync-taesd-all", "Sync taesd f=10 of 50", 10, "sync-taesd-1in5", "-"),
               ("msd-1.0", "MSD tau=0.7T (15 of 50)", 15, "msd-0.3", "-"))
    guided = {side.name: side.guided for side in sides}
    lines = [(label, ratios[every], n, partial, ref) for every, label, n, partial, ref in derived if every in ratios]
    if not lines:
        return
    print("\nderived at 50 steps from the every-step wall ratio r: 1 + (r - 1) x guided/50 (not measured)")
    for label, r, n, partial, ref in lines:
        check = (f"; check at {guided[partial]}/{steps} steps guided: derived {1 + (r - 1) * guided[partial] / steps:.2f}x, "
                 f"measured {ratios[partial]:.2f}x" if partial in ratios else "")
        print(f"  {label:<28} {1 + (r - 1) * n / 50:6.2f}x  ({ref}{check})")


def load(comfy, host: Path, ckpt: Path | None):
    """(model, clip, vae, path) loaded under inference mode, as ComfyUI's executor runs the loader."""
    import torch

    path = bench.checkpoint_path(host, ckpt)
    with torch.inference_mode():  # the weights are inference tensors, as in ComfyUI
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    if clip is None or vae is None:
        raise SystemExit(f"--ckpt {path}: needs a full checkpoint (UNet + CLIP + VAE)")
    return model, clip, vae, path


def sampling(comfy, model, clip, args) -> Callable[[object], Callable[[], object]]:
    """``runner(guidance)``: a run of SamplerCustomAdvanced's path (CFGGuider + the Latent Fusion Sampler)."""
    import torch

    from vista.nodes.latent_fusion import VistaLatentFusionSampler

    with torch.inference_mode():
        positive, negative = bench.encode(clip, bench.PROMPT), bench.encode(clip, "")
    latent = bench.empty_latent(model, args.height, args.width)
    noise = comfy.sample.prepare_noise(latent, args.seed)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", args.steps).cpu()

    def runner(guidance) -> Callable[[], object]:
        sampler = VistaLatentFusionSampler.execute(
            window_width=args.window, window_height=args.window, stride_x=args.stride, stride_y=args.stride,
            weight_mode="guided", wrap_x=False, window_batch_size=args.batch, eta=0.0, s_noise=1.0,
            variance_corrected=True, guidance=guidance).result[0]

        def run():
            with torch.inference_mode():  # as ComfyUI's executor runs SamplerCustomAdvanced
                guider = comfy.samplers.CFGGuider(model)
                guider.set_conds(positive, negative)
                guider.set_cfg(bench.CFG)
                out = guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=args.seed)
            if not bool(torch.isfinite(out).all()):
                raise SystemExit("a run returned non-finite latents")
            return out
        return run
    return runner


def print_setup(args, vae, n: int, n1: int, factor: int, note: str) -> None:
    vae_name = type(vae.first_stage_model).__name__
    print(f"canvas {args.height}x{args.width} px ({args.height // factor}x{args.width // factor} latent), window "
          f"{args.window} px, stride {args.stride} px: N = {n} windows (MSD half level: N1 = {n1}), batch {args.batch}, "
          f"{args.steps} steps (Vista Latent Fusion Sampler, eta 0, normal schedule), cfg {bench.CFG}, seed {args.seed}; "
          f"{args.rounds} ABBA round(s), warm-up: {args.warmup}")
    print(f"model VAE: {vae_name}" + (" (the test checkpoint's VAE is a TAESD: vae and taesd sides decode with the same "
                                      "architecture)" if vae_name == "TAESD" else ""))
    print(note + ("; ComfyUI's 'Missing VAE keys [taesd_encoder...]' warning of each decoder-only load is filtered"
                  if note.startswith("TAESD decoder") else ""))
    print(f"Sync: weight {SYNC['weight']}, decay {SYNC['decay']}, lpips {SYNC['lpips_net']}; MSD: levels {MSD['levels']}, "
          f"weight {MSD['weight']}, noise {MSD['noise_level']}")
    print("paper anchors (SyncDiffusion supp. Tab. 3, A100, 512x3072 px, 50 steps): MD 46.1 s, f=10 104.8 s (2.27x), "
          "f=50 339.5 s (7.37x)")
    print("goals (judged on a GPU; on CPU reported as measured): f=50 <= 6x with the VAE, <= 4x with TAESD; "
          "f=10 <= 2.0x with the VAE\n")


def main() -> None:
    args = parse_args()
    host = bench.host_path("bench/guidance.py")
    comfy = bench.import_host(host)
    model, clip, vae, path = load(comfy, host, args.ckpt)
    bench.load_pack(args.pack)
    timer = GradUnetTimer(comfy)
    timer.attach(model)  # the guider's model options carry the wrapper into the guidance passes too
    factor = bench.latent_factor(model)
    n, n1 = window_counts(args, factor)
    sides = make_sides(args, vae, n, n1)
    runner = sampling(comfy, model, clip, args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vista-bench-vae_approx-") as tmp:
        note = taesd_note(model, bench._tool(), args.configs, Path(tmp))
        logging.getLogger().addFilter(DecoderOnlyTaesd())
        print(bench.describe(host, args.pack, path.name))
        print_setup(args, vae, n, n1, factor, note)
        runs = run_abba(sides, {side.name: runner(side.guidance) for side in sides}, args.rounds, args.warmup, timer)
    print_derived(summarise(sides, runs, args.steps), sides, args.steps)
    print(f"\ntotal bench wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
