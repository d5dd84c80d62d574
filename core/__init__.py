"""Vista's algorithms: plain torch + einops + kornia. Never imports ComfyUI.

One package per concept, on import floors (a package imports only from the floors below it):

=============  =====================================================================  =========================
package        what it holds                                                           imports
=============  =====================================================================  =========================
``checks``     input checks in kornia's style (:class:`VistaInputError`)               —
``sampling``   how a step is taken: ancestral steps (k-diffusion and rectified flow),   checks
               independent step-noise streams, integer step schedules
``canvas``     MultiDiffusion's windows: plan, weights, crop/fuse, prediction fusion,   checks
               per-window call arguments, SDXL micro-conditioning, the canvas budget
``fusion``     GVCF: latent fusion (every window steps, then fuse), Variance-Corrected  canvas, sampling
               Fusion, Style Alignment of the initial noise
``mad``        MAD: merge the windows' tokens, attend on the canvas, split               canvas, sampling
``guidance``   gradient guidance of window latents: SyncDiffusion, Multi-Scale          fusion, canvas, sampling
               Diffusion, LPIPS
``zoom``       Generative Powers of Ten: zoom stack, composite, video                  sampling
=============  =====================================================================  =========================

The coherence benchmark's world and metrics are not here: they live in ``bench/evaluation``, which
imports ``core`` and is never imported by ``nodes/``.
"""
