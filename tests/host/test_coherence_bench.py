"""Coherence regression (issue [G]): ``bench/coherence.py --ci`` on the real host, checked against its baseline.

The CI configuration (4 samples, 5 steps; every method on the wide 64x384 px canvas, MultiDiffusion and MSD on a
128x256 px 2-D canvas; AlexNet LPIPS) runs every method through the Vista nodes in-process with the committed
world denoiser (``bench/data/world_denoiser.safetensors``). Each metric's mean must stay inside the band
``bench/coherence_ci_baseline.json`` holds (the calibration run's mean ± 4 standard errors of the full run's
spread at the CI sample count), and every ordering between methods that was significant in the full run and held
in the calibration run must still hold. The bench prints the table; a failure names the metric and the band.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import comfy_server

pytestmark = [pytest.mark.host, pytest.mark.e2e]

BENCH = comfy_server.REPO_ROOT / "bench" / "coherence.py"


def test_coherence_ci_regression(comfyui_path):
    env = {**os.environ, "COMFYUI_PATH": str(comfyui_path)}
    done = subprocess.run([sys.executable, str(BENCH), "--ci"], env=env, capture_output=True, text=True, timeout=900)
    print(done.stdout[-6000:])
    assert done.returncode == 0, f"bench/coherence.py --ci failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "CI coherence check passed" in done.stdout
