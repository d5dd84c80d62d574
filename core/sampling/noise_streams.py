"""Random streams for sampler step noise, independent of the initial noise.

ComfyUI hands a custom sampler ``extra_args["seed"] = noise.seed``: the SAME seed that the
NOISE object used for the initial latent noise (``comfy.sample.prepare_noise`` draws it on the
CPU with ``torch.manual_seed(seed)``). A sampler that seeds its step noise with that seed
replays the initial noise as its first step noise (on the CPU the values are identical), so the
noisy latent after step 1 carries the initial noise twice. ComfyUI's own CPU samplers use
``seed + 1``; Vista's Style Alignment reference also draws from ``seed + 1``. Vista's samplers
therefore draw step noise from :func:`step_noise_seed` — a bijective 64-bit mix of the seed
(splitmix64's finaliser), unrelated to ``seed + k`` for any small ``k`` and the same on every
device.
"""
from __future__ import annotations

import torch

__all__ = ["step_noise_seed", "step_generator"]

_MASK = (1 << 64) - 1


def step_noise_seed(seed: int) -> int:
    """The step-noise seed for a sampler seed: splitmix64(seed), a bijection on 64-bit integers.

    Convention: negative or oversized seeds are taken modulo 2^64 first; the result is in
    ``[0, 2^63)`` (``torch.Generator.manual_seed`` accepts it on every device).

    >>> step_noise_seed(0) != step_noise_seed(1) and step_noise_seed(7) not in (7, 8)
    True
    """
    z = (int(seed) + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) >> 1


def step_generator(seed: int | None, device=None) -> torch.Generator:
    """A generator for a sampler's step noise, seeded with :func:`step_noise_seed` (seed ``None`` → 0).

    >>> a, b = step_generator(3), step_generator(3)
    >>> torch.equal(torch.randn(4, generator=a), torch.randn(4, generator=b))
    True
    """
    return torch.Generator(device=device).manual_seed(step_noise_seed(0 if seed is None else seed))
