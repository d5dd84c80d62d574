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
MD (latent sampler)           Vista Latent Fusion Sampler, η 0, no guidance: SyncDiffusion's and MSD's ablation
SyncDiffusion                 Vista SyncDiffusion (w 20, decay 0.95, every step, AlexNet LPIPS, decoder=vae)
                              → Vista Latent Fusion Sampler (η 0)
MSD                           Vista Multi-Scale Diffusion (2 levels, w 10, 30 %, faithful) → Latent Fusion
                              (2-D canvas only: on the 64 px high canvas its half-size level is smaller than a window);
                              also with noise_level variance-preserving
============================  =========================================================================

Metrics (``bench/evaluation/coherence_metrics.py``): intra-LPIPS over the pairs of non-overlapping window crops of one
row (on the wide canvas: all pairs, as SyncDiffusion §5; on the 2-D canvas a sky crop and a ground crop differ by
design, so all-pairs is reported, unranked) with **both** LPIPS trunks — AlexNet and VGG (the authors' evaluation),
so SyncDiffusion, which guides with AlexNet, is also scored by the trunk it did not see; intra-Style-L on VGG16
Gram matrices (``--full``; the paper used VGG-19: not comparable with its numbers); the **seam score** (steps across
the window edges the method used ÷ across the other latent-pixel boundaries; 1 = no seam); the horizon's **steps**
between neighbouring crops and its variance, where the estimator finds a horizon (it abstains on columns of sky or
ground; the fraction found is reported); sky-colour drift; sun count; a **non-standard** Fréchet distance on AlexNet
relu5 features against single-window samples (with the noise floor between two halves of those); Laplacian energy
where windows overlap ÷ where one window covers; and the **fidelity guard**: Laplacian energy ÷ that of single-window
samples, beside every coherence number, so blur never reads as coherence. Wall time ÷ MultiDiffusion's.

Claims (``bench/evaluation/claims.py``, issue [B]): every method against its own ablation on the same seeds, as a
paired test (the mean gain ≥ 3 standard errors of the paired differences), effects on intra-LPIPS held to the
fidelity guard; where this world shows no effect of the paper's kind (MAD, MSD, Guided Fusion), the mechanism is
checked instead and labelled so. ``--ci`` passes when every claim and every band of the baseline holds.

Usage (the host's Python; ``COMFYUI_PATH`` names the ComfyUI checkout; DIR holds ``tools/convert_lpips.py --net vgg``)::

    python bench/coherence.py --full --lpips-dir DIR                 # the table: bench/results/coherence.{md,json,_strip.png}
    python bench/coherence.py --ci --lpips-dir DIR --calibrate       # the CI configuration, writes the bands and its results
    python bench/coherence.py --ci --lpips-dir DIR                   # CI: exits 1 when a claim or a band fails
    python bench/coherence.py --ci --lpips-dir DIR --sabotage slerp  # a deliberately broken pack: must exit 1
    python bench/coherence.py --full --lpips-dir DIR --weights bench/data/world_denoiser_sd_like.safetensors \
        --tag coherence_sd_like --methods MultiDiffusion MAD "MAD (τ 1)" "MD (latent sampler)" MSD
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
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
CI_RESULTS = RESULTS / "coherence_ci.json"  # the calibration run's per-sample results (tests/evaluation/test_claims.py)


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
    Method("MD (latent sampler)", route="latent"),
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
    lpips_net: str  # the trunk of the papers' intra-LPIPS column ("vgg": the SyncDiffusion authors' evaluation)
    style: bool
    methods: dict  # canvas name -> method names
    canvas_samples: dict = field(default_factory=dict)  # canvas name -> samples, where not ``samples``
    vgg_methods: tuple | None = None  # intra-LPIPS VGG for these only (None: every method)

    def samples_on(self, canvas: "Canvas") -> int:
        return self.canvas_samples.get(canvas.name, self.samples)


ALL = tuple(m.name for m in METHODS)
SINGLE = Canvas("single", WINDOW, WINDOW, WINDOW)  # one window: MAD's merge must be the identity there
LATENT_2D = ("MultiDiffusion", "MSD", "MSD (variance-preserving)")
CI_WIDE = tuple(n for n in ALL if n not in ("MD (latent sampler)", "MSD", "MSD (variance-preserving)"))
FULL = Config(samples=16, steps=10, canvases=(Canvas("wide", 64, 384, 16), Canvas("2-D", 128, 512, 32), SINGLE),
              references=48, lpips_net="vgg", style=True,
              methods={"wide": ALL, "2-D": ALL, "single": ("MultiDiffusion", "MAD (τ 1)")})
CI = Config(samples=16, steps=5, canvases=(Canvas("wide", 64, 384, 16), Canvas("2-D", 128, 256, 32), SINGLE),
            references=16, lpips_net="alex", style=False,
            methods={"wide": CI_WIDE, "2-D": LATENT_2D, "single": ("MultiDiffusion", "MAD (τ 1)")},
            canvas_samples={"2-D": 8, "single": 2},  # the 2-D and one-window canvases carry mechanism checks only
            vgg_methods=("MultiDiffusion", "SyncDiffusion"))  # the other trunk for the method that guides with Alex

METRICS = {  # name: (column title, better); "rows": intra-LPIPS over the pairs of one row of crops ([B])
    "intra_lpips_alex": ("intra-LPIPS Alex (rows)", "lower"),
    "intra_lpips_vgg": ("intra-LPIPS VGG (rows)", "lower"),
    "intra_lpips_grid": ("intra-LPIPS, all pairs (2-D)", None),
    "style": ("intra-Style-L (VGG16) ×1e3", "lower"),
    "seam": ("seam score", "lower"),
    "horizon_steps": ("horizon steps (px)", "lower"),
    "horizon_var": ("horizon var. (px²)", "lower"),
    "horizon_coverage": ("horizon found", None),
    "sky_drift": ("sky drift", "lower"),
    "suns": ("suns / panorama", None),
    "extra_suns": ("% with > 1 sun", "lower"),
    "overlap_sharpness": ("Lap. overlap ÷ single", "higher"),
    "sharpness_vs_ref": ("fidelity: Lap. ÷ single-window samples", None),
    "fidelity_error": ("|ln fidelity|", "lower"),
}
THUMBNAIL = 16  # px per thumbnail pixel (the mechanism checks' per-sample panoramas)


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
        self.steps, self.stride = steps, None  # stride: a deliberately regressed default (--sabotage stride48)
        self.describe = _common.describe(host, _common.ROOT, weights.name)

    def stride_on(self, canvas: Canvas) -> int:
        """The stride the fused methods use on ``canvas`` (px)."""
        return canvas.stride if self.stride is None or canvas.name == SINGLE.name else self.stride

    def sampler_and_model(self, method: Method, canvas: Canvas):
        """(MODEL, SAMPLER) for ``method``: the node chain of the module docstring."""
        n, model = self.nodes, self.world.model
        stride = WINDOW if method.independent else self.stride_on(canvas)
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

    def __init__(self, bench: Bench, config: Config, references: torch.Tensor, vgg: bool):
        from vista.bench.evaluation import coherence_metrics as cm
        from vista.core.canvas.windows import plan_windows
        from vista.nodes.guidance import load_lpips

        self.cm, self.config, self.plan_windows, self.bench = cm, config, plan_windows, bench
        self.alex = load_lpips("alex", torch.device("cpu"))
        self.vgg = load_lpips("vgg", torch.device("cpu")) if vgg else None
        self.ref_embedding = cm.lpips_embedding(references, self.alex)
        everything = torch.ones(references.shape[-2:], dtype=torch.bool)
        self.ref_energy = cm.laplacian_energy(references, everything).mean()
        half = len(references) // 2
        order = torch.randperm(len(references), generator=torch.Generator().manual_seed(0))
        self.fd_floor = float(cm.frechet_distance(self.ref_embedding[order[:half]], self.ref_embedding[order[half:]]))

    def plan(self, canvas: Canvas, method: Method):
        """The windows (latent px) the method ran on: what its seams are measured on."""
        f = world_latent()[1]
        stride = (WINDOW if method.independent and method.name != WORLD else self.bench.stride_on(canvas)) // f
        return self.plan_windows(*canvas.latent_hw, WINDOW // f, WINDOW // f, stride, stride)

    def per_sample(self, images: torch.Tensor, canvas: Canvas, method: Method) -> dict[str, list]:
        cm, out, f, plan = self.cm, {}, world_latent()[1], self.plan(canvas, method)
        everything = torch.ones(images.shape[-2:], dtype=torch.bool)
        with torch.no_grad():
            out["thumbnail"] = torch.nn.functional.avg_pool2d(images, THUMBNAIL).flatten(1)
            out["sharpness_vs_ref"] = cm.laplacian_energy(images, everything) / self.ref_energy
            out["fidelity_error"] = out["sharpness_vs_ref"].log().abs()
            if canvas.name == SINGLE.name:  # one window: no pair, no seam
                return _lists(out)
            out["intra_lpips_alex"] = cm.intra_lpips_from_weights(images, WINDOW, WINDOW, self.alex, rows_only=True)
            if self.vgg is not None and (self.config.vgg_methods is None or method.name in self.config.vgg_methods):
                out["intra_lpips_vgg"] = cm.intra_lpips_from_weights(images, WINDOW, WINDOW, self.vgg, rows_only=True)
            if canvas.height > WINDOW:
                grid = self.vgg if self.config.lpips_net == "vgg" else self.alex
                out["intra_lpips_grid"] = cm.intra_lpips_from_weights(images, WINDOW, WINDOW, grid)
            if self.config.style:
                features = functools.partial(cm.vgg16_style_features, weights=self.vgg)
                out["style"] = 1e3 * cm.intra_style_loss(images, WINDOW, WINDOW, features)
            out["seam"] = cm.seam_score(images, *cm.window_edges([plan], *canvas.latent_hw, f),
                                        phase=f)
            out["horizon_steps"] = cm.horizon_steps(images, WINDOW)
            out["horizon_var"] = cm.horizon_variance(images)
            out["horizon_coverage"] = cm.horizon_coverage(images)
            out["sky_drift"] = cm.sky_drift(images, WINDOW, band=6)
            suns = cm.count_suns(images).double()
            out["suns"], out["extra_suns"] = suns, 100.0 * (suns > 1).double()
            if not method.independent:
                out["overlap_sharpness"] = cm.overlap_sharpness(images, plan, scale=f)
        return _lists(out)

    def frechet(self, images: torch.Tensor) -> float:
        """Non-standard FD: non-overlapping window crops of the panoramas vs the single-window samples."""
        crops = self.cm.window_crops(images, WINDOW, WINDOW).flatten(0, 1)
        with torch.no_grad():
            return float(self.cm.frechet_distance(self.cm.lpips_embedding(crops, self.alex), self.ref_embedding))


def _lists(out: dict) -> dict[str, list]:
    """Per-sample values as JSON lists (thumbnails rounded to 1e-4)."""
    return {k: ([[round(float(x), 4) for x in row] for row in v] if k == "thumbnail" else [float(x) for x in v])
            for k, v in out.items()}


# --- the whole benchmark --------------------------------------------------------------------------------------
def run_all(config: Config, weights: Path, strip: Path | None, lpips_dir: Path | None = None,
            methods: tuple[str, ...] | None = None, broken: str | None = None) -> dict:
    """Run every method on every canvas, score it, and return the results (``--full`` / ``--ci``).

    ``methods`` limits the run to those (a partial run: only the claims and bands among them are checked);
    ``broken`` names a deliberately broken variant (``SABOTAGE``), applied once the pack is loaded.
    """
    bench = Bench(weights, config.steps)
    from vista.bench.evaluation.claims import mean_se  # the pack is loaded by now

    bench.stride = stride = sabotage(broken) if broken else None
    vgg = lpips_dir is not None
    if vgg:
        import folder_paths
        from vista.nodes.guidance import LPIPS_FOLDER, register_lpips_folder

        register_lpips_folder()
        folder_paths.add_model_folder_path(LPIPS_FOLDER, str(lpips_dir))
    elif config.lpips_net == "vgg" or config.style:
        raise SystemExit("this configuration scores with LPIPS-VGG: pass --lpips-dir (tools/convert_lpips.py --net vgg)")
    print(bench.describe, flush=True)
    start = time.perf_counter()
    refs = bench.references(config.references)
    scorer = Scorer(bench, config, refs, vgg)
    print(f"references: {len(refs)} single windows in {time.perf_counter() - start:.0f} s; "
          f"FD noise floor {scorer.fd_floor:.3f}", flush=True)
    results = {"config": asdict(config), "weights": {"file": weights.name, **bench.world.metadata},
               "fd_floor": scorer.fd_floor, "canvases": {}, "partial": methods is not None, "stride": stride}
    panels = []
    for canvas in config.canvases:
        names = [n for n in config.methods[canvas.name] if methods is None or n in methods]
        if not names:
            continue
        rows = canvas.height // WINDOW
        table = results["canvases"][canvas.name] = {"label": canvas.label(), "methods": {}}
        samples = config.samples_on(canvas)
        scenes = world_scenes(canvas, samples)
        table["methods"][WORLD] = {"seconds": None, "per_sample": scorer.per_sample(scenes, canvas, BY_NAME[WORLD]),
                                   "frechet": scorer.frechet(scenes)}
        panels.append((f"{canvas.name} · {WORLD}", scenes[0]))
        for name in names:
            method = BY_NAME[name]
            if rows < method.min_rows:
                table["methods"][name] = {"n/a": f"needs a canvas at least {method.min_rows} windows high"}
                continue
            images, seconds = bench.run(method, canvas, range(samples))
            entry = {"seconds": seconds, "per_sample": scorer.per_sample(images, canvas, method),
                     "frechet": scorer.frechet(images)}
            table["methods"][name] = entry
            shown = "  ".join(f"{k} {mean_se(entry['per_sample'][k])[0]:.4g}" for k in
                              ("intra_lpips_alex", "seam", "horizon_steps", "sharpness_vs_ref") if k in entry["per_sample"])
            print(f"  {canvas.name:6s} {name:28s} {seconds:7.1f} s  {shown}", flush=True)
            panels.append((f"{canvas.name} · {name}", images[0]))
    results["seconds"] = time.perf_counter() - start
    if strip is not None:
        write_strip(panels, strip)
    return results


def markdown(results: dict) -> str:
    """The table: mean ± standard error per metric, one table per canvas."""
    from vista.bench.evaluation.claims import check_claims, mean_se
    cfg = results["config"]
    w = results["weights"]
    per_canvas = "".join(f", {v} on {k}" for k, v in cfg.get("canvas_samples", {}).items())
    lines = [f"# Coherence benchmark — {cfg['samples']} samples per method{per_canvas}, {cfg['steps']} euler steps, "
             f"CFG {CFG}",
             "",
             f"World denoiser `{w['file']}` ({w.get('steps')} steps × batch {w.get('batch')}, eval_mse "
             f"{w.get('eval_mse')}). intra-LPIPS uses LPIPS-{cfg['lpips_net'].upper()}; Style-L uses VGG16 "
             "(the paper: VGG-19 — not comparable with its numbers); FD is **non-standard** (AlexNet relu5 "
             f"features of window crops vs {3 * cfg['references']} single-window samples; noise floor between two "
             f"halves of those: {results['fd_floor']:.3f}). Mean ± standard error over samples. Whole run "
             f"{results['seconds'] / 60:.1f} min. (rows): crops of one row only; seam score: window edges ÷ other "
             "latent-pixel boundaries (1 = no seam); horizon steps: jumps of the horizon between neighbouring crops; "
             "horizon found: fraction of columns with a sky/ground edge (the estimator abstains elsewhere); "
             "fidelity: Laplacian energy ÷ single-window samples' (the blur guard).", ""]
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
    checked, _ = check_claims(results)
    lines += ["## Claims (paired, same seeds; bench/evaluation/claims.py)", ""] + [f"- {line}" for line in checked] + [""]
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
SABOTAGE = {  # deliberately broken variants, re-run to show that the CI check fails on them (tests/host)
    "slerp": ("Style Alignment with its slerp removed (MD + SA ≡ MD)",
              ("MultiDiffusion", "MD + Style Alignment", "Guided Fusion", "GF + Style Alignment")),
    "stride48": ("the fused methods' stride regressed from 16 to 48 px", ("Independent windows", "MultiDiffusion")),
}


def sabotage(name: str) -> int | None:
    """Break the loaded pack as ``name`` says (in this process only); returns the stride override, if any."""
    if name == "slerp":
        import vista.core.fusion.style_alignment as style_alignment

        style_alignment.slerp = lambda a, b, alpha: a  # the tiles keep their own noise: no alignment at all
        return None
    return 48


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="the full table (≤ 1 h on 2 CPU cores)")
    mode.add_argument("--ci", action="store_true", help="the CI configuration (≤ 5 min quiet): the paired claims "
                                                       f"and the bands of {BASELINE.name}")
    parser.add_argument("--calibrate", action="store_true", help="with --ci: write the bands from this run "
                                                                 f"({BASELINE.name}) and its results ({CI_RESULTS.name})")
    parser.add_argument("--sabotage", choices=sorted(SABOTAGE), default=None,
                        help="with --ci: run a deliberately broken variant on the methods it touches (the check must "
                             "fail: " + "; ".join(f"{k}: {v[0]}" for k, v in SABOTAGE.items()) + ")")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="world denoiser (tools/train_world_denoiser.py)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--lpips-dir", type=Path, default=None,
                        help="a folder holding lpips_v0.1_vgg.safetensors (tools/convert_lpips.py --net vgg), added to "
                             "ComfyUI's lpips model folder; needed by --full and --ci (LPIPS-VGG, Style-L)")
    parser.add_argument("--methods", nargs="+", default=None, choices=ALL, metavar="METHOD",
                        help="--full: run only these methods (a partial table: only their claims are checked)")
    parser.add_argument("--tag", default="coherence", help="--full: results file stem (e.g. coherence_sd_like)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own, i.e. OMP_NUM_THREADS or the core count; CI runs "
                             "its shards at 1). Results are thread-count independent to ~1e-7")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.full:
        results = run_all(FULL, args.weights, args.out / f"{args.tag}_strip.png", args.lpips_dir,
                          tuple(args.methods) if args.methods else None)
        (args.out / f"{args.tag}.json").write_text(json.dumps(results, indent=1))
        (args.out / f"{args.tag}.md").write_text(markdown(results))
        print(markdown(results))
        return 0
    methods = None
    if args.sabotage:
        print(f"SABOTAGE: {SABOTAGE[args.sabotage][0]}", flush=True)
        methods = SABOTAGE[args.sabotage][1]
    results = run_all(CI, args.weights, None, args.lpips_dir, methods, args.sabotage)
    from vista.bench.evaluation.claims import calibrate_bands, check_bands, check_claims  # the pack is loaded by now

    print(markdown(results))
    if args.calibrate:
        BASELINE.write_text(json.dumps({"bands": calibrate_bands(results), "config": results["config"],
                                        "weights_eval_mse": results["weights"].get("eval_mse")}, indent=1))
        CI_RESULTS.write_text(json.dumps(results))
        print(f"wrote {BASELINE} and {CI_RESULTS}")
        return 0
    _, claim_failures = check_claims(results)
    failures = claim_failures + check_bands(json.loads(BASELINE.read_text())["bands"], results)
    print("\n".join(f"FAILED: {f}" for f in failures) if failures else
          f"CI coherence check passed ({results['seconds']:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
