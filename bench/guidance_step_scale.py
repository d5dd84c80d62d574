"""How large Vista's guidance step is against the papers' step (issue [H] items 1 and 2), host-free.

SyncDiffusion (eq. 14, and the official code) and MSD (eq. 9) move the DDPM latent ``x_t``:
``x̂_t = x_t − w_t ∇_{x_t} L``. The sampler carries ``x_σ = x_t / √ᾱ_t`` (eps/v models). This script calls the
pack's REAL ``SyncDiffusion.guide`` and ``MultiScale.guide`` on a toy eps model (a small random conv network in
ComfyUI's EPS form, ``x0 = x − σ·ε̂(x / √(1 + σ²))``; a conv + ×8 upsampling decoder; the shipped AlexNet
LPIPS) at the sigmas of SD's scaled-linear schedule (β from 0.00085 to 0.012, 1000 steps) and 50 DDIM steps
(diffusers' ``leading`` spacing with ``steps_offset`` 1: t = 981, 961, …, 1), and measures, in ``x_t``:

* Vista's step: ``(x_σ − guide(x_σ)) · √ᾱ_t`` (the moved window latent mapped to ``x_t``);
* the papers' step: ``w_t ∇_{x_t} L`` by autograd on ``x_t`` directly, with ``L(x_t)`` the same loss
  evaluated at ``x_σ = x_t / √ᾱ_t`` (MSD: its one-step result and target mapped to ``x_{t−1}`` by ``√ᾱ_{t−1}``);

and prints their ratio (projection of Vista's step on the papers', over the non-anchor windows) per step, the
run's weighted push ``Σ w_t·ratio_t / Σ w_t`` (SyncDiffusion: w 20, decay 0.95, every step guided; MSD: ω 10,
cosine decay, the first 30 % of the steps), and SyncDiffusion's first step at ComfyUI's SD1.5 σ_max 14.6146
(the shipped workflows' "normal" schedule). Before the fix the ratio is ``ᾱ_t`` (Sync) and ``ᾱ_t/ᾱ_{t−1}``
(MSD); after it, 1.

Usage (a few seconds on a CPU)::

    python bench/guidance_step_scale.py                       # this checkout
    python bench/guidance_step_scale.py --pack /tmp/base      # another checkout, e.g. a worktree of the base commit
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64
STEPS, WEIGHT, DECAY = 50, 20.0, 0.95
MSD_WEIGHT, MSD_FRACTION = 10.0, 0.3
SHOWN = (0, 10, 20, 30, 49)
COMFY_SD15_SIGMA_MAX = 14.6146


def load_pack(path: Path):
    """Import the checkout at ``path`` as package ``vista`` (its root never goes on sys.path)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import load_module

    return load_module("vista", path, package=True)


def ddim_schedule(steps: int = STEPS) -> list[tuple[int, float]]:
    """``(t, ᾱ_t)`` of SD's scaled-linear schedule at diffusers' DDIM timesteps (leading spacing, offset 1)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=F64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)
    ts = [i * (1000 // steps) + 1 for i in reversed(range(steps))]
    return [(t, alpha_bar[t].item()) for t in ts]


def sigma_of(alpha_bar: float) -> float:
    return math.sqrt((1 - alpha_bar) / alpha_bar)


class ToyEps(torch.nn.Module):
    """A random conv ε-network in ComfyUI's EPS form: ``x0 = x − σ·ε̂(x / √(1 + σ²))``."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w1", torch.randn(8, 4, 3, 3, generator=g, dtype=F64) * 0.3)
        self.register_buffer("w2", torch.randn(4, 8, 3, 3, generator=g, dtype=F64) * 0.3)

    def forward(self, x, sigma):
        s = sigma.reshape(-1, 1, 1, 1).to(x)
        eps = F.conv2d(torch.tanh(F.conv2d(x / (1 + s**2).sqrt(), self.w1, padding=1)), self.w2, padding=1)
        return x - s * eps


class ToyDecoder(torch.nn.Module):
    """Latents ``(B, 4, h, w)`` → RGB ``(B, 3, 8h, 8w)`` in [-1, 1]."""

    def __init__(self, seed: int = 1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(3, 4, 3, 3, generator=g, dtype=F64) * 0.4)

    def forward(self, z):
        return F.interpolate(torch.tanh(F.conv2d(z, self.w, padding=1)), scale_factor=8, mode="nearest")


def projection(step: torch.Tensor, papers: torch.Tensor) -> float:
    """``<step, papers> / <papers, papers>``: how much of the papers' step Vista takes."""
    return (step * papers).sum().item() / papers.square().sum().item()


def sync_ratios(schedule) -> dict[int, float]:
    """Per step i: Vista's SyncDiffusion step ÷ the paper's (non-anchor windows), every step guided."""
    from vista.core.canvas.windows import crop_windows, plan_windows, window_weights
    from vista.core.fusion.latent_fusion import LatentFusionOptions, StepContext
    from vista.core.guidance.lpips import LPIPS_ALEX_WEIGHTS, lpips
    from vista.core.guidance.syncdiffusion import SyncDiffusion, anchor_window
    from safetensors.torch import load_file

    weights = {k: v.to(F64) for k, v in load_file(str(LPIPS_ALEX_WEIGHTS)).items()}
    distance = lambda images, anchors: lpips(images, anchors, weights)
    net, decoder = ToyEps(), ToyDecoder()
    windows, hw = plan_windows(8, 24, 8, 8, 4, 4), (8, 24)
    guidance = SyncDiffusion(net, decoder, distance, anchor_window(windows, hw), WEIGHT, DECAY, STEPS)
    opts = LatentFusionOptions(tuple(windows), window_weights(windows, dtype=F64))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 8, 24, generator=g, dtype=F64)
    noise = torch.randn(1, 4, 8, 24, generator=g, dtype=F64)
    ratios = {}
    for i, (_, alpha_bar) in enumerate(schedule):
        sigma = sigma_of(alpha_bar)
        x = x0 + sigma * noise
        sigma_next = sigma_of(schedule[i + 1][1]) if i + 1 < len(schedule) else 0.0
        ctx = StepContext(torch.tensor(sigma, dtype=F64), torch.tensor(sigma_next, dtype=F64), i, STEPS, opts)
        state = guidance.begin_step(x, ctx)
        x_w = crop_windows(x, windows)
        moved = guidance.guide(x_w, windows, ctx, state)
        keep = [k for k, w in enumerate(windows) if k != guidance.anchor]
        sqrt_ab = math.sqrt(alpha_bar)
        x_t = (x_w[keep] * sqrt_ab).requires_grad_(True)
        sigmas = torch.full((len(keep),), sigma, dtype=F64)
        loss = distance(decoder(net(x_t / sqrt_ab, sigmas)), state.anchor_image.expand(len(keep), -1, -1, -1))
        (grad,) = torch.autograd.grad(loss.sum(), x_t)
        ratios[i] = projection((x_w[keep] - moved[keep]) * sqrt_ab, state.weight * grad)
    return ratios


def msd_ratios(schedule) -> dict[int, float]:
    """Per guided step i: Vista's MSD step ÷ the paper's (eq. 9 on DDPM latents at t and t − 1)."""
    from vista.core.canvas.windows import crop_windows
    from vista.core.fusion.latent_fusion import LatentFusionOptions, StepContext
    from vista.core.guidance.msd import MultiScale, downsample, level_plans
    from vista.core.sampling.schedules import steps_in_fraction

    net = ToyEps()
    plans = level_plans((16, 32), (8, 8), (4, 4), 2)
    guidance = MultiScale(net, plans, MSD_WEIGHT, MSD_FRACTION, batch_size=3)
    opts = LatentFusionOptions(plans[0].windows, plans[0].weights.to(F64))
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 4, 16, 32, generator=g, dtype=F64)
    noise = torch.randn(1, 4, 16, 32, generator=g, dtype=F64)
    chunk = plans[0].windows
    halves = [type(w)(w.y // 2, w.x // 2, w.h // 2, w.w // 2) for w in chunk]
    ratios = {}
    for i in range(steps_in_fraction(MSD_FRACTION, STEPS)):
        ab, ab_next = schedule[i][1], schedule[i + 1][1]
        sigma, sigma_next = sigma_of(ab), sigma_of(ab_next)
        x = x0 + sigma * noise
        ctx = StepContext(torch.tensor(sigma, dtype=F64), torch.tensor(sigma_next, dtype=F64), i, STEPS, opts)
        state = guidance.begin_step(x, ctx)
        x_w = crop_windows(x, chunk)
        moved = guidance.guide(x_w, chunk, ctx, state)
        x_t = (x_w * math.sqrt(ab)).requires_grad_(True)
        x_s = x_t / math.sqrt(ab)
        d = net(x_s, torch.full((x_s.shape[0],), sigma, dtype=F64))
        phi = d + (sigma_next / sigma) * (x_s - d)
        target = crop_windows(state.target, halves)
        loss = ((downsample(phi) - target) * math.sqrt(ab_next)).square().flatten(1).mean(1)
        (grad,) = torch.autograd.grad(loss.sum(), x_t)
        ratios[i] = projection((x_w - moved) * math.sqrt(ab), state.weight * grad)
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=ROOT, help="the Vista checkout to measure (default: this one)")
    args = parser.parse_args(argv)
    load_pack(args.pack.resolve())
    schedule = ddim_schedule()
    print(f"pack: {args.pack.resolve()}")
    sync = sync_ratios(schedule)
    print("\nSyncDiffusion (w 20, decay 0.95, every step of 50 guided): Vista's step ÷ the paper's")
    print("| step | t | ᾱ_t | σ | Vista ÷ paper |\n| ---: | ---: | ---: | ---: | ---: |")
    for i in SHOWN:
        t, ab = schedule[i]
        print(f"| {i} | {t} | {ab:.4f} | {sigma_of(ab):.3f} | {sync[i]:.4f} |")
    w = [WEIGHT * DECAY**i for i in range(STEPS)]
    push = sum(wi * sync[i] for i, wi in enumerate(w)) / sum(w)
    print(f"weighted push over the run, Σ w_t·ratio_t / Σ w_t: {push:.3f}")
    at_max = sync_at_sigma(COMFY_SD15_SIGMA_MAX)
    print(f"step 0 at ComfyUI's SD1.5 σ_max {COMFY_SD15_SIGMA_MAX}: {at_max:.4f}  (1/(1+σ²) = "
          f"{1 / (1 + COMFY_SD15_SIGMA_MAX**2):.4f})")
    msd = msd_ratios(schedule)
    print("\nMSD eq. 9 (ω 10, cosine decay, first 30 % = 15 of 50 steps): Vista's step ÷ the paper's")
    print("| step | ᾱ_t/ᾱ_{t−1} | Vista ÷ paper |\n| ---: | ---: | ---: |")
    for i in (0, 7, 14):
        print(f"| {i} | {schedule[i][1] / schedule[i + 1][1]:.4f} | {msd[i]:.4f} |")


def sync_at_sigma(sigma: float) -> float:
    """Vista's SyncDiffusion step ÷ the paper's at one sigma (step 0 of a run)."""
    ab = 1 / (1 + sigma**2)
    return sync_ratios([(0, ab)] * 2)[0]


if __name__ == "__main__":
    main()
