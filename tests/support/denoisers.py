"""Tiny torch denoisers for core/ tests: ``denoise(x, sigma) -> x0_hat``, window-major safe (per-sample only)."""
import torch
import torch.nn.functional as F


class TinyConvDenoiser(torch.nn.Module):
    """A random 3x3-conv network conditioned on sigma; local, so window crops matter."""

    def __init__(self, channels: int = 4, seed: int = 0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w1", torch.randn(8, channels, 3, 3, generator=g, dtype=dtype) * 0.2)
        self.register_buffer("w2", torch.randn(channels, 8, 3, 3, generator=g, dtype=dtype) * 0.2)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1).to(x)
        h = torch.tanh(F.conv2d(x / (1 + s), self.w1, padding=1))
        return x / (1 + s**2) + F.conv2d(h, self.w2, padding=1)


def box_smoother(kernel: int = 7):
    """x0_hat = a box blur of x (replicate padding): neighbouring pixels end up similar."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        pad = kernel // 2
        return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), kernel, stride=1)

    return denoise


def euler(denoise, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Plain euler/DDIM in sigma space: x <- d + (s'/s)(x - d)."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = denoise(x, s.expand(x.shape[0]))
        x = d + (s_next / s) * (x - d)
    return x
