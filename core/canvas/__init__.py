"""MultiDiffusion's canvas of windows (Bar-Tal et al. 2023, eq. 5; every paper in papers/ builds on it).

* :mod:`.windows` — the window plan (covers every latent pixel), fusion weights (uniform, and
  Guided Fusion's gaussian map, GVCF eq. 10), crop and fuse;
* :mod:`.multidiffusion` — prediction fusion: windows denoised in batches, predictions averaged;
* :mod:`.conditioning` — per-window model-call arguments (crops of spatial inputs, repeats);
* :mod:`.micro_conditioning` — SDXL's size/crop conditioning per window (SDXL §2.2);
* :mod:`.positions` — a DiT window's token positions moved to where it lies on the canvas (RoPE ids);
* :mod:`.budget` — windows, evaluations and memory of a run, estimated before it starts.
"""
