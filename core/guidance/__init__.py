"""Gradient guidance of window latents, taken outside inference mode.

* :mod:`.gradient` — the ``Denoise``/``Decode`` callables and the gradient step ``x ← x − w ∇_x L``;
* :mod:`.syncdiffusion` — SyncDiffusion (Lee et al. 2023, Alg. 1, eq. 14): LPIPS to an anchor window;
* :mod:`.msd` — Multi-Scale Diffusion (papers/msd-multi-scale-diffusion, Alg. 1, eq. 9): a
  low-resolution MultiDiffusion level guides the windows;
* :mod:`.lpips` — LPIPS v0.1 (Zhang et al. 2018) in plain torch; shipped AlexNet weights in ``data/``.
"""
