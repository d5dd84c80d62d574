"""Latent fusion and the GVCF paper (Guided Fusion, Variance-Corrected Fusion, Style Alignment).

* :mod:`.fuse` — weighted average and Variance-Corrected Fusion of window latents (GVCF eq. 8, 13, 14);
* :mod:`.latent_fusion` — the latent-fusion sampler: every window takes its own step, then the
  latents are fused (MultiDiffusion's literal formulation; the guidance hook of SyncDiffusion/MSD);
* :mod:`.style_alignment` — one-shot Style Alignment of the initial noise (GVCF eq. 15).
"""
