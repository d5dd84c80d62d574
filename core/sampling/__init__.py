"""How one sampling step is taken, shared by every Vista sampler.

* :mod:`.flow_matching` — ancestral steps in k-diffusion's sigma space and rectified flow's
  (ComfyUI's ``sample_euler_ancestral`` / ``sample_euler_ancestral_RF``);
* :mod:`.noise_streams` — step noise independent of the initial noise (seeded per run);
* :mod:`.schedules` — which steps a method acts on and with what weight (MAD's τ, SyncDiffusion's
  guided steps and decay, MSD's cosine weight), integer-exact.
"""
