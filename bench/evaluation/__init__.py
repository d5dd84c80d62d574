"""What the benchmarks measure with, apart from the product: no module under ``nodes/`` imports it.

* :mod:`.world` — a seeded procedural landscape world with an exactly known layout, and its latent;
* :mod:`.coherence_metrics` — SyncDiffusion's intra-LPIPS / intra-Style-L, the world's layout scores,
  non-standard Fréchet distance, overlap sharpness;
* :mod:`.zoom_metrics` — seams and hand-overs of zoom-stack renders and videos.

Imported by ``bench/``, ``tools/`` and ``tests/`` as ``vista.bench.evaluation``.
"""
