"""Generative Powers of Ten (Wang et al. 2024, papers/generative-powers-of-ten-zoom-stack).

* :mod:`.stack` — the zoom stack: rendering, zoom-consistent noise, multi-resolution blending (Alg. 1),
  photo-based zoom guidance and the joint sampler;
* :mod:`.composite` — decoded levels composited in pixel space;
* :mod:`.video` — the zoom video's frames.
"""
