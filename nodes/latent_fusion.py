"""Vista Latent Fusion Sampler: every window takes its own sampler step, then the window latents are fused."""
from __future__ import annotations

from dataclasses import replace

import comfy.samplers
from comfy_api.latest import io

from ..core.attention_merge import mad_active
from ..core.checks import VistaInputError
from ..core.latent_fusion import sample_latent_fusion
from ._common import (CanvasPlan, PlanCache, WindowSpec, check_image_latent, check_pixels, check_strides, core_error,
                      latent_factor, mad_tau, refuse_stochastic_flow, throw_if_interrupted, unet_alignment,
                      window_inputs, with_layout)
from .guidance import GuidanceType, GuidedRun, log_memory

NODE = "Vista Latent Fusion Sampler"
USE_TILED = "use Vista Tiled Diffusion (prediction fusion) with a stock sampler, which supports it"
SPATIAL_CONDS = (("area", "area conditioning (ConditioningSetArea)"),
                 ("mask", "mask conditioning (ConditioningSetMask)"),
                 ("control", "a ControlNet / T2I-Adapter hint"))


def reject_unsupported(model_wrap, denoise_mask) -> None:
    """Canvas-sized masks, areas, hints and c_concat would reach every window uncropped: refuse them.

    Reads only the guider's public state: ``denoise_mask`` (SamplerCustom* pass the latent's
    ``noise_mask``) and ``model_wrap.conds`` (the processed cond dicts, ``{"positive": [...], ...}``).
    """
    if denoise_mask is not None:
        raise ValueError(f"{NODE}: inpainting (a latent noise_mask / denoise mask) is not supported by latent fusion; "
                         f"{USE_TILED}")
    for name, conds in (getattr(model_wrap, "conds", None) or {}).items():
        for cond in conds:
            for key, what in SPATIAL_CONDS:
                if cond.get(key) is not None:
                    raise ValueError(f"{NODE}: the {name} conditioning holds {what}, which latent fusion cannot crop "
                                     f"per window; {USE_TILED}")
            if cond.get("model_conds", {}).get("c_concat") is not None:
                raise ValueError(f"{NODE}: the model takes c_concat (an inpainting/instruct model), which latent "
                                 f"fusion cannot crop per window; {USE_TILED}")


class LatentFusionSampler(comfy.samplers.Sampler):
    """A SAMPLER for SamplerCustom(Advanced): plans the windows from the guider's model, then runs
    :func:`core.latent_fusion.sample_latent_fusion` through ComfyUI's own ``KSAMPLER`` plumbing
    (noise scaling, callback/previews, inverse scaling)."""

    def __init__(self, spec: dict, weight_mode: str, batch_size: int, eta: float, s_noise: float, variance_corrected: bool,
                 guidance=None):
        self.spec, self.weight_mode, self.batch_size, self.guidance = spec, weight_mode, batch_size, guidance
        self.options = {"eta": eta, "s_noise": s_noise, "variance_corrected": variance_corrected}

    def window_spec(self, model_patcher) -> WindowSpec:
        """The window inputs, checked against the model's latent factor."""
        factor = latent_factor(model_patcher)
        check_pixels(NODE, factor, **{k: v for k, v in self.spec.items() if k != "wrap_x"})
        return WindowSpec(NODE, factor=factor, **self.spec)

    def step_setup(self, plan: CanvasPlan, tau: float | None, canvas_batch: int):
        """Per step: while MAD is active, the layout in model_options and all windows in one call."""
        layout = replace(plan.layout, batch=canvas_batch)

        def setup(i: int, n_steps: int, extra_args: dict) -> tuple[dict, int]:
            if tau is None or not mad_active(i, n_steps, tau):
                return extra_args, self.batch_size
            options = extra_args["model_options"]
            options = {**options, "transformer_options": with_layout(options.get("transformer_options", {}), layout)}
            return {**extra_args, "model_options": options}, len(plan.windows)

        return setup

    def alignment(self, model_patcher, tau: float | None) -> tuple[int, str]:
        """Window offset grid of this run: the UNet grid under MAD, even latent px under MSD, else 1."""
        needs = [(unet_alignment(model_patcher), "a Vista MAD patch")] if tau is not None else []
        needs += [(self.guidance.min_align, self.guidance.node)] if self.guidance is not None else []
        needs = [(a, why) for a, why in needs if a > 1]
        return (max(a for a, _ in needs), " and ".join(why for _, why in needs)) if needs else (1, "")

    def guided(self, model_wrap, extra_args: dict, plan: CanvasPlan, spec: WindowSpec, canvas_hw) -> tuple:
        """The run's core guidance and the weight copies it holds (``(None, [])`` without guidance)."""
        if self.guidance is None:
            return None, []
        f = spec.factor
        stride_hw = (min(spec.stride_y // f, plan.windows[0].h), min(spec.stride_x // f, plan.windows[0].w))
        run = GuidedRun(model_wrap, extra_args["model_options"], extra_args.get("seed"), plan, canvas_hw, stride_hw,
                        spec.wrap_x, self.weight_mode, self.batch_size)
        guidance, copies = self.guidance.build(run)
        log_memory(self.guidance, copies)
        return guidance, copies

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False):
        check_image_latent(NODE, "latent_image", noise)
        reject_unsupported(model_wrap, denoise_mask)
        refuse_stochastic_flow(NODE, model_wrap.model_patcher, self.options["eta"])
        tau = mad_tau(extra_args["model_options"].get("transformer_options", {}))
        spec, canvas_hw = self.window_spec(model_wrap.model_patcher), tuple(noise.shape[-2:])
        align, reason = self.alignment(model_wrap.model_patcher, tau)
        plan = PlanCache(spec, self.weight_mode).get(canvas_hw, align, noise.device, reason)
        guidance, copies = self.guided(model_wrap, extra_args, plan, spec, canvas_hw)
        options = {"windows": plan.windows, "weights": plan.weights, "batch_size": self.batch_size, "guidance": guidance,
                   "before_batch": throw_if_interrupted, "step_setup": self.step_setup(plan, tau, noise.shape[0]),
                   **self.options}
        inner = comfy.samplers.KSAMPLER(sample_latent_fusion, extra_options=options)
        try:
            return inner.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        except VistaInputError as e:
            raise core_error(NODE, e) from e
        finally:
            del guidance, copies  # the weight copies are held only while this run samples


class VistaLatentFusionSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaLatentFusionSampler",
            display_name=NODE,
            category="Vista/fusion",
            description=(
                "Latent-fusion MultiDiffusion sampler for SamplerCustom / SamplerCustomAdvanced: every window of the "
                "canvas takes its own step (its own CFG, its own noise) and the window latents are fused, weighted by "
                "Guided Fusion (GVCF eq. 8). With eta > 0 (DDPM-like) averaging independent noises blurs; "
                "Variance-Corrected Fusion (GVCF eq. 14) restores the noise variance. eta = 0 is DDIM/euler and "
                "equals Vista Tiled Diffusion + euler. Cost: about (number of windows) model calls per step. "
                "Not for inpainting masks, area/mask conditioning, ControlNet or c_concat models: use Vista Tiled "
                "Diffusion for those. Optional gradient guidance: Vista SyncDiffusion or Vista Multi-Scale Diffusion."
            ),
            inputs=[
                *window_inputs("guided", " While Vista MAD is active (its first tau of the steps), all windows go in one "
                                         "call; after that, this batch size applies again."),
                io.Float.Input("eta", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Noise added per step: 0 = deterministic DDIM/euler, 1 = DDPM / euler ancestral. "
                                       "Flow-matching models (SD3, Flux) support only 0 for now."),
                io.Float.Input("s_noise", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Scale of the per-window step noise (only with eta > 0)."),
                io.Boolean.Input("variance_corrected", default=True,
                                 tooltip="Variance-Corrected Fusion (GVCF eq. 14) for stochastic steps (eta > 0): keeps the "
                                         "fused noise at full variance so overlaps do not blur. No effect at eta = 0."),
                GuidanceType.Input("guidance", optional=True,
                                   tooltip="Gradient guidance of the windows before each step: Vista SyncDiffusion or "
                                           "Vista Multi-Scale Diffusion."),
            ],
            outputs=[io.Sampler.Output(tooltip="A SAMPLER for SamplerCustom / SamplerCustomAdvanced.")],
            is_experimental=True,
        )

    @classmethod
    def validate_inputs(cls, window_width: int, window_height: int, stride_x: int, stride_y: int) -> bool | str:
        return check_strides(NODE, window_width, window_height, stride_x, stride_y)

    @classmethod
    def execute(cls, window_width: int, window_height: int, stride_x: int, stride_y: int, weight_mode: str,
                wrap_x: bool, window_batch_size: int, eta: float, s_noise: float, variance_corrected: bool,
                guidance=None) -> io.NodeOutput:
        spec = {"window_width": window_width, "window_height": window_height, "stride_x": stride_x,
                "stride_y": stride_y, "wrap_x": wrap_x}
        return io.NodeOutput(LatentFusionSampler(spec, weight_mode, window_batch_size, eta, s_noise, variance_corrected,
                                                 guidance))
