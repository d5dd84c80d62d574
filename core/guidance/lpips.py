"""LPIPS v0.1 perceptual distance in plain torch (AlexNet and VGG16 trunks).

Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018 (LPIPS), eq. 1:
``d(x, y) = Σ_l 1/(H_l W_l) Σ_{h,w} ‖w_l ⊙ (ŷ^l_hw − ŷ'^l_hw)‖²₂`` with ``ŷ^l`` the
channel-unit-normalised activations of layer ``l`` of a frozen ImageNet trunk and ``w_l`` the
learned linear head ``lin{l}``. SyncDiffusion (Lee et al. 2023, eq. 14) takes the gradient of
this distance between decoded window predictions.

Convention (the official ``lpips.LPIPS(net, version="0.1")`` of richzhang/PerceptualSimilarity):

* inputs are RGB in **[-1, 1]** (``im2tensor``: ``x / 127.5 − 1``); values are not clamped;
* the ScalingLayer maps them to ImageNet statistics, ``(x − shift) / scale``;
* taps are the ReLU outputs ``relu1 … relu5`` (AlexNet) / ``relu1_2 … relu5_3`` (VGG16);
* channel normalisation is ``f / (‖f‖₂ + 1e-10)``; heads are bias-free 1×1 convolutions
  (the training-time dropout is the identity at evaluation);
* weights are a flat state dict with the official module's key names, e.g.
  ``net.slice2.3.weight`` (torchvision ``features`` index 3 inside tap 2),
  ``lin0.model.1.weight``, ``scaling_layer.shift``. Vista ships the AlexNet file
  (:data:`LPIPS_ALEX_WEIGHTS`); ``tools/convert_lpips.py`` writes both.

Everything here is differentiable w.r.t. the images (no ``no_grad``, no in-place ops), works
in float32 and float64 and on any device; the weights never require grad.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check, check_shape

__all__ = [
    "LPIPS", "LPIPS_ALEX_WEIGHTS", "LPIPS_MIN_SIZE", "LPIPS_NETS", "LPIPS_SCALE", "LPIPS_SHIFT",
    "lpips", "lpips_features", "lpips_net", "lpips_weight_shapes", "normalize_channels",
]

#: The shipped AlexNet LPIPS v0.1 weights (safetensors, converted by ``tools/convert_lpips.py``).
LPIPS_ALEX_WEIGHTS = Path(__file__).resolve().parent / "data" / "lpips_v0.1_alex.safetensors"

#: Supported trunks, named as in the official package (``lpips.LPIPS(net="alex" | "vgg")``).
LPIPS_NETS = ("alex", "vgg")

#: ScalingLayer constants of LPIPS v0.1: ``(x − shift) / scale`` per RGB channel.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

#: Smallest image side (px) for which the deepest tap is non-empty.
LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16}

# Per tap, the layers since the previous tap: "pool" = max-pool, or
# (torchvision `features` index, in_channels, out_channels, kernel, stride, padding); a ReLU
# follows every convolution and the tap is the last ReLU's output.
_TRUNKS = {
    "alex": (
        ((0, 3, 64, 11, 4, 2),),
        ("pool", (3, 64, 192, 5, 1, 2)),
        ("pool", (6, 192, 384, 3, 1, 1)),
        ((8, 384, 256, 3, 1, 1),),
        ((10, 256, 256, 3, 1, 1),),
    ),
    "vgg": (
        ((0, 3, 64, 3, 1, 1), (2, 64, 64, 3, 1, 1)),
        ("pool", (5, 64, 128, 3, 1, 1), (7, 128, 128, 3, 1, 1)),
        ("pool", (10, 128, 256, 3, 1, 1), (12, 256, 256, 3, 1, 1), (14, 256, 256, 3, 1, 1)),
        ("pool", (17, 256, 512, 3, 1, 1), (19, 512, 512, 3, 1, 1), (21, 512, 512, 3, 1, 1)),
        ("pool", (24, 512, 512, 3, 1, 1), (26, 512, 512, 3, 1, 1), (28, 512, 512, 3, 1, 1)),
    ),
}
_POOL = {"alex": (3, 2), "vgg": (2, 2)}  # torchvision's MaxPool2d(kernel_size, stride)


def lpips_weight_shapes(net: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of a complete LPIPS v0.1 state dict, trunk convolutions first, in forward order.

    Args:
        net: ``"alex"`` or ``"vgg"``.

    >>> shapes = lpips_weight_shapes("alex")
    >>> shapes["net.slice1.0.weight"], shapes["lin4.model.1.weight"], len(shapes)
    ((64, 3, 11, 11), (1, 256, 1, 1), 17)
    """
    check(net in LPIPS_NETS, f"net must be one of {LPIPS_NETS}, got {net!r}")
    shapes: dict[str, tuple[int, ...]] = {}
    for tap, layers in enumerate(_TRUNKS[net], start=1):
        for index, c_in, c_out, k, _, _ in (layer for layer in layers if layer != "pool"):
            shapes[f"net.slice{tap}.{index}.weight"] = (c_out, c_in, k, k)
            shapes[f"net.slice{tap}.{index}.bias"] = (c_out,)
    for tap, layers in enumerate(_TRUNKS[net]):
        shapes[f"lin{tap}.model.1.weight"] = (1, layers[-1][2], 1, 1)
    shapes["scaling_layer.shift"] = shapes["scaling_layer.scale"] = (1, 3, 1, 1)
    return shapes


def lpips_net(weights: Mapping[str, torch.Tensor]) -> str:
    """The trunk (``"alex"`` / ``"vgg"``) of an LPIPS v0.1 state dict, after checking every key and shape.

    Raises:
        VistaInputError: keys missing or unexpected, or a tensor of the wrong shape.

    >>> lpips_net({k: torch.zeros(s) for k, s in lpips_weight_shapes("vgg").items()})
    'vgg'
    """
    net = "vgg" if "net.slice1.2.weight" in weights else "alex"
    expected = lpips_weight_shapes(net)
    missing, unexpected = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    check(not missing and not unexpected, f"weights are not an LPIPS v0.1 {net} state dict: "
          f"missing keys {missing[:4]}, unexpected keys {unexpected[:4]}; write one with tools/convert_lpips.py")
    for key, shape in expected.items():
        check(tuple(weights[key].shape) == shape,
              f"weights[{key!r}] must have shape {shape} (LPIPS v0.1 {net}), got {tuple(weights[key].shape)}")
    return net


def normalize_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise the feature vector of every pixel (LPIPS eq. 1, ``ŷ^l``): ``f / (‖f‖₂ + eps)``.

    ``torch.linalg.vector_norm`` rather than ``sqrt(sum(f²))``: the same value, but at an all-zero
    pixel (a dead ReLU tap) its gradient is the formula's own finite ``1/eps`` instead of NaN.

    Shape: ``(B, C, H, W)`` → ``(B, C, H, W)``.

    >>> normalize_channels(torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)).flatten().tolist()
    [0.6000000238418579, 0.800000011920929]
    """
    return features / (torch.linalg.vector_norm(features, dim=1, keepdim=True) + eps)


def lpips_features(x: torch.Tensor, weights: Mapping[str, torch.Tensor], net: str) -> list[torch.Tensor]:
    """Activations at the five LPIPS taps of the frozen trunk, after the v0.1 ScalingLayer.

    Args:
        x: RGB images in [-1, 1].
        weights: LPIPS v0.1 state dict of ``net`` (see :func:`lpips_weight_shapes`), already on
            ``x``'s device and dtype.
        net: ``"alex"`` or ``"vgg"``.

    Shape: ``x (B, 3, H, W)`` → five ``(B, C_l, H_l, W_l)``; ``C_l`` = 64, 192, 384, 256, 256
    (alex) or 64, 128, 256, 512, 512 (vgg).
    """
    h = (x - weights["scaling_layer.shift"]) / weights["scaling_layer.scale"]
    kernel, stride = _POOL[net]
    taps = []
    for tap, layers in enumerate(_TRUNKS[net], start=1):
        for layer in layers:
            if layer == "pool":
                h = F.max_pool2d(h, kernel, stride)
                continue
            index, _, _, _, conv_stride, padding = layer
            prefix = f"net.slice{tap}.{index}"
            h = F.relu(F.conv2d(h, weights[f"{prefix}.weight"], weights[f"{prefix}.bias"], conv_stride, padding))
        taps.append(h)
    return taps


def lpips(x: torch.Tensor, y: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """LPIPS v0.1 distance between two image batches (Zhang et al. 2018, eq. 1).

    Per tap: unit-normalise channels, square the difference, apply the 1×1 head ``lin{l}``,
    average over space; then sum the five taps. The weights are cast to ``x``'s device and
    dtype (a no-op when they match: keep them there across calls). Gradients flow to ``x`` and
    ``y``; detach the reference yourself (SyncDiffusion detaches the anchor).

    Args:
        x: RGB images in [-1, 1] (the official ``im2tensor`` scaling; not clamped).
        y: RGB images in [-1, 1], same size as ``x``; a batch of 1 is compared with every image of
            ``x`` (and vice versa), its features computed once.
        weights: an LPIPS v0.1 state dict (official key names), e.g.
            ``safetensors.torch.load_file(LPIPS_ALEX_WEIGHTS)``. To differentiate, the weights
            must not be inference tensors: clone them inside ``torch.inference_mode(False)``.

    Returns:
        The distance of every pair: ``>= 0`` (the heads are non-negative), exactly 0 for identical images.

    Shape: ``x (B, 3, H, W)``, ``y (B | 1, 3, H, W)`` → ``(B,)`` (``B`` = the larger batch);
    ``H, W >= LPIPS_MIN_SIZE[net]`` (31 px alex, 16 px vgg).

    Example (random weights, so the value means nothing):

    >>> w = {k: torch.rand(s) for k, s in lpips_weight_shapes("alex").items()}
    >>> x = torch.rand(2, 3, 32, 32) * 2 - 1
    >>> lpips(x, x, w).tolist(), lpips(x, x[:1], w).shape
    ([0.0, 0.0], torch.Size([2]))
    """
    check_shape(x, ["B", "3", "H", "W"], "x")
    check_shape(y, ["B", "3", "H", "W"], "y")
    check(x.shape[2:] == y.shape[2:], f"x and y must have the same size, got {tuple(x.shape)} and {tuple(y.shape)}")
    check(x.shape[0] == y.shape[0] or 1 in (x.shape[0], y.shape[0]),
          f"x and y must have the same batch size or one of them 1, got {x.shape[0]} and {y.shape[0]}")
    check(x.is_floating_point() and y.dtype == x.dtype,
          f"x and y must share one floating dtype, got {x.dtype}, {y.dtype}")
    net = lpips_net(weights)
    side = LPIPS_MIN_SIZE[net]
    check(min(x.shape[2:]) >= side, f"x must be at least {side}x{side} px for LPIPS {net}, got {tuple(x.shape[2:])}")
    w = {k: v.to(device=x.device, dtype=x.dtype) for k, v in weights.items()}
    grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    check(not grad or not any(torch.is_inference(v) for v in w.values()),
          "weights are inference tensors (loaded under torch.inference_mode) and cannot take part in a "
          "gradient: clone them inside torch.inference_mode(False)")
    total = x.new_zeros(max(x.shape[0], y.shape[0]))
    for tap, (fx, fy) in enumerate(zip(lpips_features(x, w, net), lpips_features(y, w, net))):
        diff = (normalize_channels(fx) - normalize_channels(fy)).pow(2)
        total = total + F.conv2d(diff, w[f"lin{tap}.model.1.weight"]).mean(dim=(1, 2, 3))
    return total


class LPIPS(nn.Module):
    """LPIPS v0.1 as a module: holds the weights as buffers and calls :func:`lpips`.

    The buffers keep the official key names, so ``state_dict()`` round-trips the file and
    ``.to(device, dtype)`` moves them once. The weights never require grad.

    Shape: ``forward(x (B, 3, H, W), y (B | 1, 3, H, W))`` → ``(B,)``.

    >>> m = LPIPS({k: torch.zeros(s) for k, s in lpips_weight_shapes("alex").items()})
    >>> m.trunk, len(m.state_dict())
    ('alex', 17)
    """

    def __init__(self, weights: Mapping[str, torch.Tensor]):
        super().__init__()
        self.trunk = lpips_net(weights)
        for key, value in weights.items():
            *path, leaf = key.split(".")
            owner: nn.Module = self
            for name in path:
                if not hasattr(owner, name):
                    owner.add_module(name, nn.Module())
                owner = getattr(owner, name)
            owner.register_buffer(leaf, value.detach())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lpips(x, y, dict(self.named_buffers()))
