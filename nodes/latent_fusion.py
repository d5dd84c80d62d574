"""Vista Latent Fusion Sampler: every window takes its own sampler step, then the window latents are fused."""
from __future__ import annotations

from dataclasses import replace

import comfy.samplers
import torch
from comfy_api.latest import io

from ..core.mad.attention_merge import mad_active
from ..core.checks import VistaInputError
from ..core.fusion.latent_fusion import sample_latent_fusion
from ..core.canvas.micro_conditioning import window_size_conditioning
from ..core.canvas.multidiffusion import chunks
from ..core.canvas.windows import WEIGHT_MODES
from ._common import (ETA_RANGE, S_NOISE_RANGE, CanvasPlan, PlanCache, WindowSpec, check_image_latent,
                      check_latent_values, check_numbers, check_option, check_patch_grid, check_pixels, check_strides,
                      core_error, first_failure, latent_factor, mad_tau, require,
                      size_conditioning_input, step_form, takes_size_conditioning, WindowBatchProgress, unet_alignment,
                      unet_blocks, window_inputs, with_block_progress, with_layout)
from .budget import check_canvas_budget
from .guidance import GuidanceType, GuidedRun, log_memory
from .positions import POSITIONS, CanvasPositionHook, positions_input

NODE = "Vista Latent Fusion Sampler"
# What autograd says when a host network cannot be differentiated (in-place updates, ops without a backward).
AUTOGRAD_FAILURES = ("modified by an inplace operation", "no autograd formula", "does not require grad")
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


class WindowCalls:
    """Per-window call arguments on the latent route: SDXL micro-conditioning
    (:func:`core.canvas.micro_conditioning.window_size_conditioning`) and DiT canvas positions
    (:class:`nodes.positions.CanvasPositionHook`).

    The sampler's model calls carry no window identity, so this follows the order in which
    :func:`core.fusion.latent_fusion.sample_latent_fusion` makes them: per step, ``step_setup`` first, then one
    model call per window batch, in plan order, of the step's batch size. Each call gets its batch's
    windows through a ``model_function_wrapper`` in that call's own ``model_options`` (chained before any
    existing one), where ComfyUI hands over ``y`` as one window-major block per batched conditioning.
    A call that does not fit its batch (shape, count) raises rather than condition the wrong windows.
    ``size_factor`` (image px per latent px) turns the micro-conditioning on, ``positions`` the canvas positions
    for a canvas of ``canvas_hw`` latent px. Lives for one ``sample`` call.
    """

    def __init__(self, windows, setup, size_factor: int | None = None, positions: CanvasPositionHook | None = None,
                 canvas_hw: tuple[int, int] = (0, 0)):
        self.windows, self.setup, self.size_factor = tuple(windows), setup, size_factor
        self.positions, self.canvas_hw = positions, tuple(canvas_hw)
        self.batches, self.calls = [], 0

    def step_setup(self, i: int, n_steps: int, extra_args: dict) -> tuple[dict, int]:
        self.check_step_done()
        extra_args, batch_size = self.setup(i, n_steps, extra_args)
        self.batches, self.calls = chunks(self.windows, batch_size), 0
        return extra_args, batch_size

    def check_step_done(self) -> None:
        if self.calls != len(self.batches):
            raise RuntimeError(f"{NODE}: {self.calls} model calls in a step of {len(self.batches)} window batches; "
                               f"per-window conditioning cannot tell the windows apart (set window_size_conditioning "
                               f"to false and positions to window)")

    def next_batch(self, x):
        """The windows of this model call, checked against its shape."""
        if self.calls >= len(self.batches):
            self.calls += 1
            self.check_step_done()
        batch = self.batches[self.calls]
        self.calls += 1
        if x.shape[0] % len(batch) or tuple(x.shape[-2:]) != (batch[0].h, batch[0].w):
            raise RuntimeError(f"{NODE}: a model call of shape {tuple(x.shape)} does not fit its {len(batch)} "
                               f"windows of {batch[0].h}x{batch[0].w} latent px (per-window conditioning)")
        return batch

    def model(self, model):
        """``model`` with each call's window batch conditioned on its windows' crop, size and position."""
        def call(x, sigma, **kwargs):
            batch = self.next_batch(x)
            options = kwargs.get("model_options", {})
            wrapper = self.wrapper(batch, options.get("model_function_wrapper"))
            return model(x, sigma, **{**kwargs, "model_options": {**options, "model_function_wrapper": wrapper}})
        return call

    def wrapper(self, batch, previous):
        """A ``model_function_wrapper`` that gives ``batch``'s windows their crop and size (``y``) and positions."""
        def conditioned(apply_model, args):
            c, groups, canvas_positions = args["c"], len(args["cond_or_uncond"]), None
            if self.size_factor is not None and isinstance(c.get("y"), torch.Tensor):
                c = {**c, "y": window_size_conditioning(c["y"], batch, self.size_factor, groups=groups)}
            if self.positions is not None:
                c, canvas_positions = self.positions.call(c, batch, self.canvas_hw, groups,
                                                          args["input"].shape[0] // (groups * len(batch)))
            args = {**args, "c": c}
            if previous is not None:
                out = previous(apply_model, args)
            else:
                out = apply_model(args["input"], args["timestep"], **args["c"])
            if canvas_positions is not None:
                canvas_positions.check_called()
            return out
        return conditioned

    def sampler_function(self):
        """:func:`sample_latent_fusion` making its model calls through :meth:`model`, for ``KSAMPLER``."""
        def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
            out = sample_latent_fusion(self.model(model), x, sigmas, extra_args, callback, disable,
                                       **{**options, "step_setup": self.step_setup})
            self.check_step_done()
            return out
        return sample


class LatentFusionSampler(comfy.samplers.Sampler):
    """A SAMPLER for SamplerCustom(Advanced): plans the windows from the guider's model, then runs
    :func:`core.fusion.latent_fusion.sample_latent_fusion` through ComfyUI's own ``KSAMPLER`` plumbing
    (noise scaling, callback/previews, inverse scaling)."""

    def __init__(self, spec: dict, weight_mode: str, batch_size: int, eta: float, s_noise: float, variance_corrected: bool,
                 guidance=None, size_conditioning: bool = True, positions: str = "window"):
        self.spec, self.weight_mode, self.batch_size, self.guidance = spec, weight_mode, batch_size, guidance
        self.options = {"eta": eta, "s_noise": s_noise, "variance_corrected": variance_corrected}
        self.size_conditioning, self.positions = size_conditioning, positions

    def window_spec(self, model_patcher) -> WindowSpec:
        """The window inputs, checked against the model's latent factor."""
        factor = latent_factor(model_patcher)
        check_pixels(NODE, factor, **{k: v for k, v in self.spec.items() if k != "wrap_x"})
        check_patch_grid(NODE, model_patcher, window_width=self.spec["window_width"], window_height=self.spec["window_height"])
        return WindowSpec(NODE, factor=factor, **self.spec)

    def step_setup(self, plan: CanvasPlan, tau: float | None, canvas_batch: int, progress: WindowBatchProgress,
                   blocks: tuple[int, int]):
        """Per step: while MAD is active, the layout in model_options and all windows in one call, whose UNet
        blocks are the step's progress units (``blocks``, :func:`~nodes._common.with_block_progress`); else the
        step's window batches are."""
        layout = replace(plan.layout, batch=canvas_batch)

        def setup(i: int, n_steps: int, extra_args: dict) -> tuple[dict, int]:
            if tau is None or not mad_active(i, n_steps, tau):
                progress.start_step(i, n_steps, -(-len(plan.windows) // max(self.batch_size, 1)))
                return extra_args, self.batch_size
            options = extra_args["model_options"]
            merged = with_layout(options.get("transformer_options", {}), layout)
            options = {**options, "transformer_options": with_block_progress(merged, progress, blocks)}
            progress.start_step(i, n_steps, max(sum(blocks), 1))
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
        stride_hw = spec.latent_stride((plan.windows[0].h, plan.windows[0].w))
        run = GuidedRun(model_wrap, extra_args["model_options"], extra_args.get("seed"), plan, canvas_hw, stride_hw,
                        spec.wrap_x, self.weight_mode, self.batch_size)
        try:
            guidance, copies = self.guidance.build(run)
        except VistaInputError as e:
            raise core_error(self.guidance.node, e) from e
        log_memory(self.guidance, copies)
        return guidance, copies

    def sampler_function(self, model_patcher, plan: CanvasPlan, spec: WindowSpec, options: dict, canvas_hw):
        """The k-diffusion function: :func:`sample_latent_fusion`, with per-window SDXL micro-conditioning and DiT
        canvas positions where they are on."""
        size_factor = spec.factor if self.size_conditioning and takes_size_conditioning(model_patcher) else None
        positions = CanvasPositionHook.for_model(NODE, model_patcher) if self.positions == "canvas" else None
        if size_factor is None and positions is None:
            return sample_latent_fusion
        return WindowCalls(plan.windows, options["step_setup"], size_factor, positions, canvas_hw).sampler_function()

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False):
        check_image_latent(NODE, "latent_image", noise)
        if latent_image is not None:
            check_latent_values(NODE, "latent_image", latent_image, model_wrap.model_patcher)
        reject_unsupported(model_wrap, denoise_mask)
        tau = mad_tau(extra_args["model_options"].get("transformer_options", {}))
        spec, canvas_hw = self.window_spec(model_wrap.model_patcher), tuple(noise.shape[-2:])
        align, reason = self.alignment(model_wrap.model_patcher, tau)
        plan = PlanCache(spec, self.weight_mode).get(canvas_hw, align, noise.device, reason)
        check_canvas_budget(NODE, model_wrap.model_patcher, canvas_hw, len(plan.windows), self.batch_size, tau is not None,
                            window_hw_latent=(plan.windows[0].h, plan.windows[0].w),
                            stride_hw_latent=spec.latent_stride((plan.windows[0].h, plan.windows[0].w)),
                            samples=noise.shape[0], factor=spec.factor)
        guidance, copies = self.guided(model_wrap, extra_args, plan, spec, canvas_hw)
        progress, blocks = WindowBatchProgress(), unet_blocks(model_wrap.model_patcher)
        options = {"windows": plan.windows, "weights": plan.weights, "batch_size": self.batch_size, "guidance": guidance,
                   "before_batch": progress.before_batch,
                   "step_setup": self.step_setup(plan, tau, noise.shape[0], progress, blocks),
                   **self.options, **step_form(model_wrap.model_patcher)}
        inner = comfy.samplers.KSAMPLER(self.sampler_function(model_wrap.model_patcher, plan, spec, options, canvas_hw),
                                        extra_options=options)
        try:
            return inner.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        except VistaInputError as e:
            raise core_error(NODE, e) from e
        except RuntimeError as e:
            if guidance is not None and any(sign in str(e) for sign in AUTOGRAD_FAILURES):
                raise ValueError(f"{self.guidance.node}: this model's network cannot be differentiated "
                                 f"({type(model_wrap.model_patcher.model).__name__}: {e}); gradient guidance is not "
                                 f"available for it. Flux's blocks are known not to be (in-place updates in the host's "
                                 f"code); SD1.x/2.x, SDXL and SD3 are tested. Disconnect the guidance input") from e
            raise
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
                "Diffusion for those. Optional gradient guidance: Vista SyncDiffusion or Vista Multi-Scale Diffusion. "
                "Use the model's native window (1024 px on SDXL, 768 px on SD2.x-v); on SDXL each window can be told "
                "its own crop and size (window_size_conditioning)."
            ),
            inputs=[
                *window_inputs("guided", " While Vista MAD is active (its first tau of the steps), all windows go in one "
                                         "call; after that, this batch size applies again."),
                io.Float.Input("eta", default=0.0, min=ETA_RANGE[0], max=ETA_RANGE[1], step=0.01,
                               tooltip="Noise added per step: 0 = deterministic DDIM/euler, 1 = DDPM / euler ancestral. "
                                       "Flow-matching models (SD3, Flux) take ComfyUI's own flow ancestral step "
                                       "(euler_ancestral's RF form)."),
                io.Float.Input("s_noise", default=1.0, min=S_NOISE_RANGE[0], max=S_NOISE_RANGE[1], step=0.01,
                               tooltip="Scale of the per-window step noise (only with eta > 0)."),
                io.Boolean.Input("variance_corrected", default=True,
                                 tooltip="Variance-Corrected Fusion (GVCF eq. 14) for stochastic steps (eta > 0): keeps the "
                                         "fused noise at full variance so overlaps do not blur. No effect at eta = 0."),
                GuidanceType.Input("guidance", optional=True,
                                   tooltip="Gradient guidance of the windows before each step: Vista SyncDiffusion or "
                                           "Vista Multi-Scale Diffusion."),
                size_conditioning_input(),
                positions_input(),
            ],
            outputs=[io.Sampler.Output(tooltip="A SAMPLER for SamplerCustom / SamplerCustomAdvanced.")],
        )

    @classmethod
    def validate_inputs(cls, window_width: int = None, window_height: int = None, stride_x: int = None,
                        stride_y: int = None, eta: float = None, s_noise: float = None) -> bool | str:
        return first_failure(check_strides(NODE, window_width, window_height, stride_x, stride_y),
                             check_numbers(NODE, cls.define_schema(), eta=eta, s_noise=s_noise))

    @classmethod
    def execute(cls, window_width: int, window_height: int, stride_x: int, stride_y: int, weight_mode: str,
                wrap_x: bool, window_batch_size: int, eta: float, s_noise: float, variance_corrected: bool,
                guidance=None, window_size_conditioning: bool = True, positions: str = "window") -> io.NodeOutput:
        check_option(NODE, "weight_mode", weight_mode, WEIGHT_MODES)
        check_option(NODE, "positions", positions, POSITIONS)
        if positions == "canvas" and guidance is not None:
            raise ValueError(f"{NODE}: positions=canvas with a guidance input is not supported: the guidance passes make "
                             f"their own model calls, which would keep window positions. Use positions=window, or "
                             f"disconnect the guidance")
        require(cls.validate_inputs(window_width, window_height, stride_x, stride_y, eta, s_noise))  # linked values
        spec = {"window_width": window_width, "window_height": window_height, "stride_x": stride_x,
                "stride_y": stride_y, "wrap_x": wrap_x}
        return io.NodeOutput(LatentFusionSampler(spec, weight_mode, window_batch_size, eta, s_noise, variance_corrected,
                                                 guidance, window_size_conditioning, positions))
