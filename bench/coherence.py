"""Coherence benchmark (issue [G]): every Vista method side by side on the procedural world, the papers' metrics.

The world (``bench/evaluation/world.py``) has a known layout — one flat horizon, a sky colour constant along x, one sun or
moon per scene six windows wide — and a small denoiser trained on window-sized crops of it
(``tools/train_world_denoiser.py``, loaded as a ComfyUI MODEL by ``bench/world_model.py``). A model that only
ever saw 64 px windows has to be made coherent by the panorama method, exactly as SD is.

Every method runs through the Vista nodes in-process, on the host's own sampling path (``CFGGuider.sample``, what
KSampler and SamplerCustomAdvanced call), under ``torch.inference_mode()`` as ComfyUI's executor runs nodes:

============================  =========================================================================
Independent windows (floor)   Vista Tiled Diffusion with stride = window (no overlap: each window alone)
MultiDiffusion                Vista Tiled Diffusion, uniform weights + euler
Guided Fusion                 Vista Tiled Diffusion, guided weights + euler
MD / GF + Style Alignment     as MD / GF, initial noise from Vista Style Alignment (α 0.4, seeded reference)
MD stochastic (plain avg.)    Vista Latent Fusion Sampler, η 1, variance_corrected off
VCF (stochastic)              Vista Latent Fusion Sampler, η 1, variance_corrected on
MAD                           Vista MAD Attention (τ 0.3, all blocks) → Vista Tiled Diffusion + euler; also τ 1
SyncDiffusion                 Vista SyncDiffusion (w 20, decay 0.95, every step, AlexNet LPIPS, decoder=vae)
                              → Vista Latent Fusion Sampler (η 0)
MSD                           Vista Multi-Scale Diffusion (2 levels, w 10, 30 %, faithful) → Latent Fusion
                              (2-D canvas only: on the 64 px high canvas its half-size level is smaller than a window);
                              also with noise_level variance-preserving
============================  =========================================================================

Metrics (``bench/evaluation/coherence_metrics.py``): intra-LPIPS over all pairs of non-overlapping window crops (LPIPS-VGG as
the SyncDiffusion authors' evaluation; AlexNet in ``--ci``), intra-Style-L on VGG16 Gram matrices (the paper used
VGG-19: not comparable with its numbers), horizon variance (px²), sky-colour drift, sun count, a **non-standard**
Fréchet distance on AlexNet relu5 features against single-window samples (with the noise floor between two halves of
those), Laplacian energy where windows overlap ÷ where one window covers, Laplacian energy ÷ that of single-window
samples, and wall time ÷ MultiDiffusion's.

Usage (the host's Python; ``COMFYUI_PATH`` names the ComfyUI checkout)::

    python bench/coherence.py --full                 # the table: bench/results/coherence.{md,json}, coherence_strip.png
    python bench/coherence.py --ci --calibrate       # after --full: the CI configuration, writes the CI baseline
    python bench/coherence.py --ci                   # CI regression: exits 1 when a metric leaves its band
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from world_model import CLASSES, EMPTY_PROMPT, load_world_model  # noqa: E402

WINDOW = 64  # px: the denoiser's training window (16 latent px)
CFG = 3.0
BATCH = 64  # windows per model call (all windows of the wide canvas in one call)
RESULTS = _common.ROOT / "bench" / "results"
WEIGHTS = _common.ROOT / "bench" / "data" / "world_denoiser.safetensors"
BASELINE = _common.ROOT / "bench" / "coherence_ci_baseline.json"
SIGMAS_IN_BAND = 4.0  # CI band: calibrated mean ± 4 standard errors of the full run, scaled to the CI sample count


def world_latent() -> tuple[int, int]:
    """(channels, image px per latent px) of the world's latent, from ``bench.evaluation.world`` (the pack is loaded by then)."""
    from vista.bench.evaluation.world import LATENT_CHANNELS, LATENT_FACTOR

    return LATENT_CHANNELS, LATENT_FACTOR


@dataclass(frozen=True)
class Canvas:
    """A canvas in px, windows of ``WINDOW`` px at ``stride`` px."""

    name: str
    height: int
    width: int
    stride: int

    @property
    def latent_hw(self) -> tuple[int, int]:
        factor = world_latent()[1]
        return self.height // factor, self.width // factor

    def label(self) -> str:
        rows, cols = self.height // WINDOW, self.width // WINDOW
        return f"{self.name}: {self.width}x{self.height} px ({rows}x{cols} windows of {WINDOW} px), stride {self.stride} px"


@dataclass(frozen=True)
class Method:
    """How one method is assembled from Vista nodes (see the module docstring)."""

    name: str
    weight_mode: str = "uniform"
    route: str = "tiled"  # "tiled": Vista Tiled Diffusion + euler; "latent": Vista Latent Fusion Sampler
    independent: bool = False
    style_aligned: bool = False
    mad: bool = False
    eta: float = 0.0
    variance_corrected: bool = True
    guidance: str | None = None  # "sync" | "msd"
    min_rows: int = 1  # windows the canvas must be high (MSD's half-size level must hold a window)
    tau: float = 0.3  # MAD's merged fraction of the steps (the paper's default)
    noise_level: str = "faithful (paper)"  # MSD's noise_level


METHODS = (
    Method("Independent windows", independent=True),
    Method("MultiDiffusion"),
    Method("Guided Fusion", weight_mode="guided"),
    Method("MD + Style Alignment", style_aligned=True),
    Method("GF + Style Alignment", weight_mode="guided", style_aligned=True),
    Method("MD stochastic (plain avg.)", route="latent", eta=1.0, variance_corrected=False),
    Method("VCF (stochastic)", route="latent", eta=1.0, variance_corrected=True),
    Method("MAD", mad=True),
    Method("MAD (τ 1)", mad=True, tau=1.0),
    Method("SyncDiffusion", route="latent", guidance="sync"),
    Method("MSD", route="latent", guidance="msd", min_rows=2),
    Method("MSD (variance-preserving)", route="latent", guidance="msd", min_rows=2, noise_level="variance-preserving"),
)
WORLD = "World scenes (reference)"
BY_NAME = {m.name: m for m in METHODS + (Method(WORLD, independent=True),)}


@dataclass(frozen=True)
class Config:
    samples: int
    steps: int
    canvases: tuple[Canvas, ...]
    references: int  # single-window samples per class
    lpips_net: str
    style: bool
    methods: dict  # canvas name -> method names


ALL = tuple(m.name for m in METHODS)
FULL = Config(samples=16, steps=10, canvases=(Canvas("wide", 64, 384, 16), Canvas("2-D", 128, 512, 32)),
              references=48, lpips_net="vgg", style=True, methods={"wide": ALL, "2-D": ALL})
CI = Config(samples=4, steps=5, canvases=(Canvas("wide", 64, 384, 16), Canvas("2-D", 128, 256, 32)),
            references=16, lpips_net="alex", style=False,
            methods={"wide": ALL, "2-D": ("MultiDiffusion", "MSD", "MSD (variance-preserving)")})

METRICS = {  # name: (column title, better)
    "intra_lpips": ("intra-LPIPS", "lower"),
    "style": ("intra-Style-L (VGG16) ×1e3", "lower"),
    "horizon_var": ("horizon var. (px²)", "lower"),
    "sky_drift": ("sky drift", "lower"),
    "suns": ("suns / panorama", None),
    "extra_suns": ("% with > 1 sun", "lower"),
    "overlap_sharpness": ("Lap. overlap ÷ single", "higher"),
    "sharpness_vs_ref": ("Lap. ÷ single-window samples", None),
}


# --- running the methods through the nodes ----------------------------------------------------------------
class Bench:
    """The host, the pack's nodes, the world model; runs one method on one canvas for one seed."""

    def __init__(self, weights: Path, steps: int):
        host = _common.host_path("bench/coherence.py")
        self.comfy = _common.import_host(host)
        self.vista = _common.load_pack(_common.ROOT)
        from vista.nodes import guidance, latent_fusion, mad, style_alignment, tiled_diffusion

        self.nodes = {"tiled": tiled_diffusion.VistaTiledDiffusion, "latent": latent_fusion.VistaLatentFusionSampler,
                      "mad": mad.VistaMADAttention, "style": style_alignment.VistaStyleAlignment,
                      "sync": guidance.VistaSyncDiffusion, "msd": guidance.VistaMultiScaleDiffusion}
        self.world = load_world_model(self.comfy, weights)
        self.steps = steps
        self.describe = _common.describe(host, _common.ROOT, weights.name)

    def sampler_and_model(self, method: Method, canvas: Canvas):
        """(MODEL, SAMPLER) for ``method``: the node chain of the module docstring."""
        n, model = self.nodes, self.world.model
        stride = WINDOW if method.independent else canvas.stride
        if method.mad:
            model = n["mad"].execute(model, tau=method.tau, input_blocks=True, middle_block=True,
                                     output_blocks=True).result[0]
        if method.route == "tiled":
            model = n["tiled"].execute(model, WINDOW, WINDOW, stride, stride, method.weight_mode, False, BATCH,
                                       True).result[0]
            return model, self.comfy.samplers.sampler_object("euler")
        guidance = None
        if method.guidance == "sync":
            guidance = n["sync"].execute(weight=20.0, decay=0.95, guided_steps=self.steps, lpips_net="alex",
                                         decoder="vae", vae=self.world.vae).result[0]
        elif method.guidance == "msd":
            guidance = n["msd"].execute(levels=2, weight=10.0, guided_fraction=0.3,
                                        noise_level=method.noise_level).result[0]
        sampler = n["latent"].execute(WINDOW, WINDOW, stride, stride, method.weight_mode, False, BATCH, method.eta,
                                      1.0, method.variance_corrected, guidance, True).result[0]
        return model, sampler

    def sample(self, model, sampler, latent: torch.Tensor, seed: int, class_id: int, style_aligned: bool = False):
        """SamplerCustomAdvanced's path: NOISE → CFGGuider(model, class prompt, empty prompt, CFG) → sampler."""
        comfy = self.comfy
        with torch.inference_mode():
            if style_aligned:
                noise_node = self.nodes["style"].execute(model, seed, WINDOW, WINDOW, 0.4, "seeded").result[0]
                noise = noise_node.generate_noise({"samples": latent})
            else:
                noise = comfy.sample.prepare_noise(latent, seed)
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(self.world.conditioning(class_id), self.world.conditioning(EMPTY_PROMPT))
            guider.set_cfg(CFG)
            sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", self.steps)
            return guider.sample(noise, latent, sampler, sigmas.cpu(), disable_pbar=True, seed=seed).float()

    def run(self, method: Method, canvas: Canvas, seeds: range) -> tuple[torch.Tensor, float]:
        """Panoramas ``(N, 3, H, W)`` in [-1, 1] for ``seeds`` (class = seed mod 3) and the wall seconds."""
        model, sampler = self.sampler_and_model(method, canvas)
        latent = torch.zeros(1, world_latent()[0], *canvas.latent_hw)
        start, out = time.perf_counter(), []
        for seed in seeds:
            out.append(self.sample(model, sampler, latent, seed, seed % len(CLASSES), method.style_aligned))
        return decode(torch.cat(out)), time.perf_counter() - start

    def references(self, per_class: int) -> torch.Tensor:
        """Single-window samples ``(3·per_class, 3, 64, 64)``: the plain model, no Vista node, same CFG/steps."""
        channels, factor = world_latent()
        sampler, out = self.comfy.samplers.sampler_object("euler"), []
        latent = torch.zeros(per_class, channels, WINDOW // factor, WINDOW // factor)
        for class_id in range(len(CLASSES)):
            out.append(self.sample(self.world.model, sampler, latent, 100_000 + class_id, class_id))
        return decode(torch.cat(out))


def world_scenes(canvas: Canvas, n: int) -> torch.Tensor:
    """The reference row: ``n`` rendered world scenes of the canvas size (class = seed mod 3), through the latent
    round trip (``encode_latent`` → ``decode_latent``) — what a perfectly coherent panorama scores here."""
    from vista.bench.evaluation.world import encode_latent, render_scene

    scenes = torch.stack([render_scene(seed % len(CLASSES), seed, canvas.height, canvas.width)[0] for seed in range(n)])
    return decode(encode_latent(scenes))


def decode(latent: torch.Tensor) -> torch.Tensor:
    """World latent → RGB in [-1, 1] (``bench.evaluation.world.decode_latent``, what WorldVAE decodes)."""
    from vista.bench.evaluation.world import decode_latent

    return decode_latent(latent).clamp(-1, 1)


# --- metrics ------------------------------------------------------------------------------------------------
class Scorer:
    """The metric weights (LPIPS AlexNet shipped; VGG from ComfyUI's lpips folder) and the reference samples."""

    def __init__(self, bench: Bench, config: Config, references: torch.Tensor):
        from vista.bench.evaluation import coherence_metrics as cm
        from vista.core.canvas.windows import plan_windows
        from vista.nodes.guidance import load_lpips

        self.cm, self.config, self.plan_windows = cm, config, plan_windows
        self.alex = load_lpips("alex", torch.device("cpu"))
        self.lpips = self.alex if config.lpips_net == "alex" else load_lpips("vgg", torch.device("cpu"))
        self.vgg = load_lpips("vgg", torch.device("cpu")) if config.style else None
        self.ref_embedding = cm.lpips_embedding(references, self.alex)
        everything = torch.ones(references.shape[-2:], dtype=torch.bool)
        self.ref_energy = cm.laplacian_energy(references, everything).mean()
        half = len(references) // 2
        order = torch.randperm(len(references), generator=torch.Generator().manual_seed(0))
        self.fd_floor = float(cm.frechet_distance(self.ref_embedding[order[:half]], self.ref_embedding[order[half:]]))

    def per_sample(self, images: torch.Tensor, canvas: Canvas, method: Method) -> dict[str, list[float]]:
        cm, out = self.cm, {}
        with torch.no_grad():
            out["intra_lpips"] = cm.intra_lpips_from_weights(images, WINDOW, WINDOW, self.lpips)
            if self.vgg is not None:
                features = functools.partial(cm.vgg16_style_features, weights=self.vgg)
                out["style"] = 1e3 * cm.intra_style_loss(images, WINDOW, WINDOW, features)
            out["horizon_var"] = cm.horizon_variance(images)
            out["sky_drift"] = cm.sky_drift(images, WINDOW, band=6)
            suns = cm.count_suns(images).double()
            out["suns"], out["extra_suns"] = suns, 100.0 * (suns > 1).double()
            if not method.independent:
                f = world_latent()[1]
                windows = self.plan_windows(*canvas.latent_hw, WINDOW // f, WINDOW // f, canvas.stride // f,
                                            canvas.stride // f)
                out["overlap_sharpness"] = cm.overlap_sharpness(images, windows, scale=f)
            everything = torch.ones(images.shape[-2:], dtype=torch.bool)
            out["sharpness_vs_ref"] = cm.laplacian_energy(images, everything) / self.ref_energy
        return {k: [float(x) for x in v] for k, v in out.items()}

    def frechet(self, images: torch.Tensor) -> float:
        """Non-standard FD: non-overlapping window crops of the panoramas vs the single-window samples."""
        crops = self.cm.window_crops(images, WINDOW, WINDOW).flatten(0, 1)
        with torch.no_grad():
            return float(self.cm.frechet_distance(self.cm.lpips_embedding(crops, self.alex), self.ref_embedding))


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd / math.sqrt(n)


# --- the whole benchmark --------------------------------------------------------------------------------------
def run_all(config: Config, weights: Path, strip: Path | None, lpips_dir: Path | None = None) -> dict:
    """Run every method on every canvas, score it, and return the results (``--full`` / ``--ci``)."""
    bench = Bench(weights, config.steps)
    if lpips_dir is not None:
        import folder_paths
        from vista.nodes.guidance import LPIPS_FOLDER, register_lpips_folder

        register_lpips_folder()
        folder_paths.add_model_folder_path(LPIPS_FOLDER, str(lpips_dir))
    print(bench.describe, flush=True)
    start = time.perf_counter()
    refs = bench.references(config.references)
    scorer = Scorer(bench, config, refs)
    print(f"references: {len(refs)} single windows in {time.perf_counter() - start:.0f} s; "
          f"FD noise floor {scorer.fd_floor:.3f}", flush=True)
    results = {"config": asdict(config), "weights": {"file": weights.name, **bench.world.metadata},
               "fd_floor": scorer.fd_floor, "canvases": {}}
    panels = []
    for canvas in config.canvases:
        rows = canvas.height // WINDOW
        table = results["canvases"][canvas.name] = {"label": canvas.label(), "methods": {}}
        scenes = world_scenes(canvas, config.samples)
        table["methods"][WORLD] = {"seconds": None, "per_sample": scorer.per_sample(scenes, canvas, BY_NAME[WORLD]),
                                   "frechet": scorer.frechet(scenes)}
        panels.append((f"{canvas.name} · {WORLD}", scenes[0]))
        for name in config.methods[canvas.name]:
            method = BY_NAME[name]
            if rows < method.min_rows:
                table["methods"][name] = {"n/a": f"needs a canvas at least {method.min_rows} windows high"}
                continue
            images, seconds = bench.run(method, canvas, range(config.samples))
            entry = {"seconds": seconds, "per_sample": scorer.per_sample(images, canvas, method),
                     "frechet": scorer.frechet(images)}
            table["methods"][name] = entry
            lpips_mean = mean_se(entry["per_sample"]["intra_lpips"])[0]
            print(f"  {canvas.name:5s} {name:28s} {seconds:7.1f} s  intra-LPIPS {lpips_mean:.4f}  "
                  f"horizon var {mean_se(entry['per_sample']['horizon_var'])[0]:.2f}", flush=True)
            panels.append((f"{canvas.name} · {name}", images[0]))
    results["seconds"] = time.perf_counter() - start
    if strip is not None:
        write_strip(panels, strip)
    return results


def markdown(results: dict) -> str:
    """The table: mean ± standard error per metric, one table per canvas."""
    cfg = results["config"]
    w = results["weights"]
    lines = [f"# Coherence benchmark — {cfg['samples']} samples per method, {cfg['steps']} euler steps, CFG {CFG}",
             "",
             f"World denoiser `{w['file']}` ({w.get('steps')} steps × batch {w.get('batch')}, eval_mse "
             f"{w.get('eval_mse')}). intra-LPIPS uses LPIPS-{cfg['lpips_net'].upper()}; Style-L uses VGG16 "
             "(the paper: VGG-19 — not comparable with its numbers); FD is **non-standard** (AlexNet relu5 "
             f"features of window crops vs {3 * cfg['references']} single-window samples; noise floor between two "
             f"halves of those: {results['fd_floor']:.3f}). Mean ± standard error over samples. Whole run "
             f"{results['seconds'] / 60:.1f} min.", ""]
    for canvas in results["canvases"].values():
        methods = canvas["methods"]
        md_seconds = methods.get("MultiDiffusion", {}).get("seconds")
        columns = [k for k in METRICS if any(k in m.get("per_sample", {}) for m in methods.values())]
        lines += [f"## {canvas['label']}", "",
                  "| method | " + " | ".join(METRICS[k][0] + {"lower": " ↓", "higher": " ↑", None: ""}[METRICS[k][1]]
                                            for k in columns) + " | FD (non-std) ↓ | time ÷ MD |",
                  "|---" * (len(columns) + 3) + "|"]
        for name, m in methods.items():
            if "n/a" in m:
                lines.append(f"| {name} | " + " | ".join(["n/a"] * (len(columns) + 2)) + f" | ({m['n/a']})")
                continue
            cells = []
            for k in columns:
                if k in m["per_sample"]:
                    mean, se = mean_se(m["per_sample"][k])
                    cells.append(f"{mean:.3g} ± {se:.2g}")
                else:
                    cells.append("n/a")
            ratio = f"{m['seconds'] / md_seconds:.2f}" if md_seconds and m["seconds"] is not None else "—"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['frechet']:.3g} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def write_strip(panels: list[tuple[str, torch.Tensor]], path: Path) -> None:
    """One panorama per method and canvas (the first seed), labelled, stacked vertically."""
    from PIL import Image, ImageDraw

    scale, label_h, gap = 2, 14, 4
    width = max(img.shape[-1] for _, img in panels) * scale
    height = sum(img.shape[-2] * scale + label_h + gap for _, img in panels)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw, y = ImageDraw.Draw(sheet), 0
    for label, img in panels:
        draw.text((2, y + 1), label, fill=(0, 0, 0))
        pixels = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        picture = Image.fromarray(pixels).resize((img.shape[-1] * scale, img.shape[-2] * scale), Image.NEAREST)
        sheet.paste(picture, (0, y + label_h))
        y += img.shape[-2] * scale + label_h + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


# --- CI regression --------------------------------------------------------------------------------------------
def significant_orderings(results: dict, z: float = SIGMAS_IN_BAND) -> list[dict]:
    """Pairs (canvas, metric, better method, worse method) whose means differ by more than ``z`` standard errors."""
    out = []
    for canvas_name, canvas in results["canvases"].items():
        methods = {k: v for k, v in canvas["methods"].items() if "per_sample" in v}
        for metric, (_, better) in METRICS.items():
            if better is None:
                continue
            stats = {k: mean_se(v["per_sample"][metric]) for k, v in methods.items() if metric in v["per_sample"]}
            for a, (ma, sa) in stats.items():
                for b, (mb, sb) in stats.items():
                    gap = (mb - ma) if better == "lower" else (ma - mb)
                    if a != b and gap > z * math.hypot(sa, sb):
                        out.append({"canvas": canvas_name, "metric": metric, "better": a, "worse": b})
    return out


def calibrate(full: dict, ci: dict) -> dict:
    """The CI baseline: per (canvas, method, metric) the CI run's mean and a band from the full run's spread."""
    n_ci, bands = ci["config"]["samples"], {}
    for canvas_name, canvas in ci["canvases"].items():
        for method, entry in canvas["methods"].items():
            for metric, values in entry.get("per_sample", {}).items():
                full_values = full["canvases"].get(canvas_name, {}).get("methods", {}).get(method, {}) \
                    .get("per_sample", {}).get(metric)
                spread = values if not full_values else full_values
                mean, _ = mean_se(values)
                sd = mean_se(spread)[1] * math.sqrt(len(spread))
                bands[f"{canvas_name}|{method}|{metric}"] = {"mean": mean, "tolerance": SIGMAS_IN_BAND * sd / math.sqrt(n_ci) + 1e-6}
    held = {(o["canvas"], o["metric"], o["better"], o["worse"]) for o in significant_orderings(ci, z=0.0)}
    orderings = [o for o in significant_orderings(full) if (o["canvas"], o["metric"], o["better"], o["worse"]) in held]
    return {"bands": bands, "orderings": orderings, "config": ci["config"], "weights_eval_mse": ci["weights"].get("eval_mse")}


def check_against(baseline: dict, ci: dict) -> list[str]:
    """Failures of the CI run against the baseline: a mean out of its band, or an ordering reversed."""
    failures = []
    for key, band in baseline["bands"].items():
        canvas, method, metric = key.split("|")
        values = ci["canvases"][canvas]["methods"][method]["per_sample"][metric]
        mean = mean_se(values)[0]
        if abs(mean - band["mean"]) > band["tolerance"]:
            failures.append(f"{key}: {mean:.4g} outside {band['mean']:.4g} ± {band['tolerance']:.3g}")
    for o in baseline["orderings"]:
        methods = ci["canvases"][o["canvas"]]["methods"]
        a = mean_se(methods[o["better"]]["per_sample"][o["metric"]])[0]
        b = mean_se(methods[o["worse"]]["per_sample"][o["metric"]])[0]
        if (a >= b) if METRICS[o["metric"]][1] == "lower" else (a <= b):
            failures.append(f"{o['canvas']} {o['metric']}: {o['better']} ({a:.4g}) no longer beats {o['worse']} ({b:.4g})")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="the full table (≤ 1 h on 2 CPU cores)")
    mode.add_argument("--ci", action="store_true", help="the reduced CI configuration (≤ 5 min), checked against "
                                                       f"{BASELINE.name}")
    parser.add_argument("--calibrate", action="store_true", help="with --ci: write the baseline from this run and "
                                                                 "the full run's results instead of checking")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="world denoiser (tools/train_world_denoiser.py)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--lpips-dir", type=Path, default=None,
                        help="a folder holding lpips_v0.1_vgg.safetensors (tools/convert_lpips.py --net vgg), added to "
                             "ComfyUI's lpips model folder; needed by --full (LPIPS-VGG, Style-L)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bench_kwargs = {"lpips_dir": args.lpips_dir}
    if args.full:
        results = run_all(FULL, args.weights, args.out / "coherence_strip.png", **bench_kwargs)
        (args.out / "coherence.json").write_text(json.dumps(results, indent=1))
        (args.out / "coherence.md").write_text(markdown(results))
        print(markdown(results))
        return 0
    results = run_all(CI, args.weights, None, **bench_kwargs)
    print(markdown(results))
    if args.calibrate:
        if not (args.out / "coherence.json").is_file():
            raise SystemExit(f"--calibrate needs the full run's {args.out / 'coherence.json'}: run --full first")
        full = json.loads((args.out / "coherence.json").read_text())
        BASELINE.write_text(json.dumps(calibrate(full, results), indent=1))
        print(f"wrote {BASELINE}")
        return 0
    failures = check_against(json.loads(BASELINE.read_text()), results)
    print("\n".join(failures) if failures else f"CI coherence check passed ({results['seconds']:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
