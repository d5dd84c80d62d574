"""ComfyUI's model-loading memory reservation, counted for Vista's window batch instead of the canvas.

Before sampling, ComfyUI frees device memory for the run from an estimate made on the latent's shape
(``sampler_helpers.prepare_sampling`` → ``estimate_memory(model, noise_shape, conds)`` →
``model.memory_required``, both host versions): for a panorama that is the whole canvas, although
Vista Tiled Diffusion only ever calls the model on batches of windows. The estimate then grows with
the canvas — offloading the model or refusing the run on a GPU that could sample it window by window.

Vista Tiled Diffusion registers a ``WrappersMP.PREPARE_SAMPLING`` wrapper (the public hook that
ComfyUI's own context windows use for the same purpose) that hands the estimate the shape of one
window batch. While a Vista MAD patch is on the model, all windows go in one call (the merge needs
them) and the batch is counted as such. The latent-fusion route (a SAMPLER) cannot reach this hook:
the guider prepares sampling before calling a sampler, so there the reservation still counts the canvas.

The same wrapper runs Vista's canvas budget (:func:`nodes.budget.check_canvas_budget`) first: a canvas whose
largest model call cannot fit is refused with the numbers before the model is loaded or a window cropped.
"""
from __future__ import annotations

import logging

from ._common import WindowSpec, mad_tau
from .budget import check_canvas_budget

__all__ = ["window_batch_shape", "WindowBatchReservation"]


def window_batch_shape(noise_shape, window_hw: tuple[int, int], batch_size: int, n_windows: int) -> list[int]:
    """The latent shape of one window batch: ``(B · min(batch_size, N), C, …, h, w)``.

    >>> window_batch_shape((1, 4, 64, 384), (64, 64), 4, 21)
    [4, 4, 64, 64]
    """
    shape = list(noise_shape)
    return [shape[0] * min(batch_size, n_windows), *shape[1:-2], *window_hw]


class WindowBatchReservation:
    """``PREPARE_SAMPLING`` wrapper: estimate the run's memory for a window batch, not the canvas."""

    def __init__(self, spec: WindowSpec, batch_size: int):
        self.spec, self.batch_size = spec, batch_size

    def __call__(self, executor, model, noise_shape, conds, *args, **kwargs):
        f = self.spec.factor
        if len(noise_shape) < 4:
            return executor(model, noise_shape, conds, *args, **kwargs)
        height, width = noise_shape[-2:]
        window_hw = (min(self.spec.window_height // f, height), min(self.spec.window_width // f, width))
        n_windows = len(self.spec.plan(height, width))
        options = kwargs.get("model_options") or model.model_options
        mad = mad_tau(options.get("transformer_options", {})) is not None
        check_canvas_budget(self.spec.node, model, (height, width), n_windows, self.batch_size, mad,
                            window_hw_latent=window_hw, stride_hw_latent=self.spec.latent_stride(window_hw),
                            samples=noise_shape[0], factor=f)
        shape = window_batch_shape(noise_shape, window_hw, n_windows if mad else self.batch_size, n_windows)
        logging.debug("%s: memory estimate for a window batch %s instead of the canvas %s", self.spec.node, shape,
                      list(noise_shape))
        return executor(model, shape, conds, *args, **kwargs)
