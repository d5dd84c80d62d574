"""Helpers shared by the bench/ scripts: host, checkpoint, pack, UNet timer, ABBA runner, summary.

Every script compares two sides A and B of the same sampling run (in one process unless it
says otherwise) and prints, as each run finishes, one line with its wall time and the time
spent inside the diffusion model (the UNet for SD-family models) alone, measured by a
``WrappersMP.DIFFUSION_MODEL`` wrapper around every network call, and their difference
(other_s: sampler, window cropping and fusion, noise). Noise on a shared machine then shows as
the wall and UNet columns moving together; a real overhead as the wall time moving alone.

Common options (``add_common_args``):

``--ckpt PATH``   any checkpoint ComfyUI's CheckpointLoaderSimple loads (UNet + CLIP in one
                  file: SD1.x/2.x, SDXL, …); default the random-weight SD1.5 test checkpoint
                  built by tools/make_test_checkpoint.py into ``$VISTA_TEST_CACHE``
                  (default ~/.cache/vista-tests).
``--pack PATH``   the Vista checkout to time (default: this repository), so the same script
                  measures "before" and "after" checkouts, e.g. a git worktree of an older commit.
``--rounds N``    ABBA rounds: each round runs A, B, B, A, so neither side always runs first
                  or last; both sides are warmed up once before the timed runs.

The host is ``$COMFYUI_PATH``, imported as ``main.py --use-pytorch-cross-attention`` would,
with ``--cpu`` unless CUDA is available. The pack is imported as package ``vista`` through
its own folder: the repository root never goes on ``sys.path``, where our ``nodes/``
package would shadow ComfyUI's ``nodes.py``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a panorama of a mountain lake"
CFG = 5.0


def load_module(name: str, path: Path, package: bool = False):
    """Import ``path`` (a file, or a package folder) as module ``name`` without touching sys.path."""
    location = path / "__init__.py" if package else path
    spec = importlib.util.spec_from_file_location(name, location,
                                                  submodule_search_locations=[str(path)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_common_args(parser: argparse.ArgumentParser, rounds: int = 1) -> None:
    parser.add_argument("--ckpt", type=Path, default=None,
                        help="checkpoint file (any ComfyUI checkpoint with UNet + CLIP); "
                             "default: the random-weight SD1.5 test checkpoint")
    parser.add_argument("--pack", type=Path, default=ROOT,
                        help="Vista checkout to time (default: this repository)")
    parser.add_argument("--rounds", type=positive_int, default=rounds,
                        help=f"ABBA rounds, 2 timed runs per side each (default {rounds})")


def host_path(script: str) -> Path:
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        raise SystemExit(f"{script}: set COMFYUI_PATH to a ComfyUI checkout")
    return Path(path).resolve()


def _tool():
    name = "vista_make_test_checkpoint"
    return sys.modules.get(name) or load_module(name, ROOT / "tools" / "make_test_checkpoint.py")


def import_host(host: Path):
    """The host's ``comfy`` package, CPU unless CUDA is available, PyTorch cross-attention."""
    comfy = _tool()._import_host(host)
    import comfy.patcher_extension  # noqa: F401
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    import comfy.sd  # noqa: F401

    return comfy


def load_checkpoint(comfy, host: Path, ckpt: Path | None):
    """(model_patcher, clip, name) of ``ckpt``, or of the test checkpoint when ``ckpt`` is None."""
    ckpt = checkpoint_path(host, ckpt)
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clip=True)
    if clip is None:
        raise SystemExit(f"--ckpt {ckpt}: the file holds no text encoder; pass a full checkpoint (UNet + CLIP)")
    return model, clip, ckpt.name


def load_pack(path: Path):
    """Import the Vista checkout at ``path`` as package ``vista`` (after the host)."""
    path = path.resolve()
    if not (path / "__init__.py").is_file() or not (path / "nodes").is_dir():
        raise SystemExit(f"--pack {path} is not a Vista checkout (needs __init__.py and nodes/)")
    return load_module("vista", path, package=True)


def describe(host: Path, pack: Path, ckpt_name: str) -> str:
    """One line: host version, pack commit, checkpoint, device."""
    import torch

    text = (host / "comfyui_version.py").read_text() if (host / "comfyui_version.py").is_file() else ""
    version = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    commit = subprocess.run(["git", "-C", str(pack), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(pack), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"CPU, {torch.get_num_threads()} torch threads")
    return (f"host ComfyUI {version.group(1) if version else '?'}; pack {pack.resolve()} @ {commit}"
            f"{' + uncommitted changes' if dirty else ''}; checkpoint {ckpt_name}; {device}")


def latent_factor(model) -> int:
    """Image pixels per latent pixel (v0.3.64's latent formats do not publish it: 8)."""
    return int(getattr(model.get_model_object("latent_format"), "spacial_downscale_ratio", 8))


def empty_latent(model, height_px: int, width_px: int, batch: int = 1):
    """Zeros shaped like the model's latent for an image of ``height_px`` × ``width_px``."""
    import torch

    factor = latent_factor(model)
    channels = model.get_model_object("latent_format").latent_channels
    return torch.zeros(batch, channels, height_px // factor, width_px // factor)


def encode(clip, text: str):
    """A CONDITIONING list, like CLIPTextEncode."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def sync() -> None:
    """Wait for queued GPU work, so a timer stops when the work is done (no-op on the CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss only grows), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class UnetTimer:
    """Seconds and calls spent inside the diffusion model, via the public DIFFUSION_MODEL wrapper.

    ``attach`` it to the base model BEFORE the nodes under test clone it: clones copy the
    wrapper lists, so every patched model reports to the same timer. On a GPU it
    synchronises around each call (the same for both sides), or the time would land elsewhere.
    """

    KEY = "vista_bench_unet_timer"

    def __init__(self, comfy):
        self.kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
        self.seconds, self.calls = 0.0, 0

    def attach(self, model) -> None:
        model.add_wrapper_with_key(self.kind, self.KEY, self._wrapper)

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def _wrapper(self, executor, *args, **kwargs):
        sync()
        start = time.perf_counter()
        out = executor(*args, **kwargs)
        sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


@dataclass
class Run:
    side: str
    index: str  # "warm-up" or the timed run's number
    wall: float
    unet: float
    calls: int
    rss: float


def print_table_header(title: str) -> None:
    print(f"\n{title}", flush=True)
    print(f"  {'side':<28} {'run':>7} {'wall_s':>8} {'unet_s':>8} {'other_s':>8} {'unet_calls':>10} {'peak_rss_MiB':>12}",
          flush=True)


def print_run(run: Run) -> None:
    unet, other = (f"{run.unet:8.2f}", f"{run.wall - run.unet:8.2f}") if run.calls else (f"{'-':>8}", f"{'-':>8}")
    print(f"  {run.side:<28} {run.index:>7} {run.wall:8.2f} {unet} {other} {run.calls:10d} {run.rss:12.0f}", flush=True)


def timed_run(side: str, index: str, fn: Callable[[], object], timer: UnetTimer) -> Run:
    timer.reset()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    run = Run(side, index, time.perf_counter() - start, timer.seconds, timer.calls, peak_rss_mib())
    print_run(run)
    return run


def abba_order(sides: list[str], rounds: int) -> list[str]:
    """A B B A per round (one side: that side twice per round)."""
    return [s for _ in range(rounds) for s in sides + sides[::-1]]


def abba(title: str, a: tuple[str, Callable[[], object]], b: tuple[str, Callable[[], object]], rounds: int,
         timer: UnetTimer) -> dict[str, list[Run]]:
    """Warm up A then B (untimed in the summary), then ``rounds`` × A B B A; one printed line per run."""
    fns = dict([a, b])
    print_table_header(title)
    for side in fns:
        timed_run(side, "warm-up", fns[side], timer)
    runs: dict[str, list[Run]] = {side: [] for side in fns}
    for side in abba_order(list(fns), rounds):
        runs[side].append(timed_run(side, str(len(runs[side]) + 1), fns[side], timer))
    return runs


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} [{min(values):.2f}–{max(values):.2f}]"


def summarise(runs: dict[str, list[Run]], ratio_label: str | None = None, target: str = "") -> tuple[float, float]:
    """Medians and min–max per side, then (when two sides) the B ÷ A ratio of wall and of UNet medians.

    Returns the (wall, UNet) ratios (nan when a side has no UNet time)."""
    print(f"  {'summary':<28} {'runs':>7} {'wall_s median [min–max]':>26} {'unet_s median [min–max]':>26} "
          f"{'other_s median':>14}")
    for side, rs in runs.items():
        timed = all(r.calls for r in rs)
        unet = _spread([r.unet for r in rs]) if timed else "-"
        other = f"{statistics.median(r.wall - r.unet for r in rs):14.2f}" if timed else f"{'-':>14}"
        print(f"  {side:<28} {len(rs):>7} {_spread([r.wall for r in rs]):>26} {unet:>26} {other}")
    if len(runs) != 2:
        return float("nan"), float("nan")
    (name_a, a), (name_b, b) = runs.items()
    wall = statistics.median(r.wall for r in b) / statistics.median(r.wall for r in a)
    has_unet = all(r.calls for r in a + b)
    unet = statistics.median(r.unet for r in b) / statistics.median(r.unet for r in a) if has_unet else float("nan")
    label = ratio_label or f"{name_b} / {name_a}"
    print(f"  ratio {label}: wall {wall:.3f}, UNet {unet:.3f} (of the medians)" + (f"  ({target})" if target else ""),
          flush=True)
    return wall, unet


def checkpoint_path(host: Path, ckpt: Path | None) -> Path:
    """``ckpt``, checked, or the random-weight SD1.5 test checkpoint (built into ``$VISTA_TEST_CACHE``) when None."""
    if ckpt is None:
        cache = Path(os.environ.get("VISTA_TEST_CACHE", Path.home() / ".cache" / "vista-tests"))
        return _tool().make_checkpoint(cache, host)
    ckpt = ckpt.expanduser()
    if not ckpt.is_file():
        raise SystemExit(f"--ckpt {ckpt}: no such file")
    return ckpt


def _proc_status_mib(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB, or None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def reset_peak_memory() -> float:
    """Start a per-run peak: returns the memory in use now, MiB (GPU: allocated; CPU: RSS).

    GPU: ``torch.cuda.reset_peak_memory_stats``. CPU (Linux): freed heap is handed back to the OS
    (``malloc_trim``) and the process's peak RSS (VmHWM) is reset through /proc/self/clear_refs, so
    :func:`peak_memory_mib` reports this run's peak and not an earlier run's; elsewhere it falls
    back to ``ru_maxrss`` (the process's peak so far).
    """
    import ctypes
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return peak_rss_mib()
    return _proc_status_mib("VmRSS") or peak_rss_mib()


def peak_memory_mib() -> float:
    """Peak memory since :func:`reset_peak_memory`, MiB: GPU ``max_memory_allocated``, CPU peak RSS (VmHWM)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return _proc_status_mib("VmHWM") or peak_rss_mib()
