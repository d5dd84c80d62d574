"""bench/evaluation/claims.py: every method held to its own claim, and every check shown able to fail ([B] item 2).

The stored results are the CI configuration's calibration run (``bench/results/coherence_ci.json``, written by
``bench/coherence.py --ci --calibrate`` with the committed world denoiser): the same per-sample values the CI check
sees. The degenerations replace a method's per-sample results by another method's ("X behaves like Y"); the two
that need real re-runs (slerp removed, stride regressed) are in ``tests/host/test_coherence_bench.py``.
"""
import json
import math
from pathlib import Path

import pytest

from vista.bench.evaluation import claims as cl

STORED = Path(__file__).resolve().parents[2] / "bench" / "results" / "coherence_ci.json"
BASELINE = Path(__file__).resolve().parents[2] / "bench" / "coherence_ci_baseline.json"


@pytest.fixture(scope="module")
def results():
    return json.loads(STORED.read_text())


def synthetic(a: dict, b: dict, canvas: str = "wide") -> dict:
    """Results with two methods "A" and "B" on one canvas, per-sample metric lists given."""
    return {"canvases": {canvas: {"methods": {"A": {"per_sample": a}, "B": {"per_sample": b}}}}}


class TestPaired:
    def test_mean_and_standard_error_of_differences(self):
        mean, se, n = cl.paired([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])
        assert (mean, n) == (3.0, 3) and se == pytest.approx(1 / math.sqrt(3))

    def test_nan_pairs_left_out(self):
        assert cl.paired([1.0, float("nan"), 3.0], [0.0, 0.0, 1.0])[2] == 2

    def test_lengths_must_match(self):
        with pytest.raises(ValueError, match="one length"):
            cl.paired([1.0], [1.0, 2.0])


class TestCheckClaim:
    sharp = {"sharpness_vs_ref": [1.0] * 6}

    def test_clear_effect_holds(self):
        claim = cl.Claim("wide", "A", "B", "m", "lower", "effect", "")
        r = synthetic({"m": [1.0, 1.1, 0.9, 1.0, 1.05, 0.95], **self.sharp}, {"m": [2.0] * 6, **self.sharp})
        assert cl.check_claim(claim, r)[0]

    def test_no_effect_fails(self):
        claim = cl.Claim("wide", "A", "B", "m", "lower", "effect", "")
        r = synthetic({"m": [1.0, 2.0, 3.0], **self.sharp}, {"m": [1.0, 2.0, 3.0], **self.sharp})
        assert not cl.check_claim(claim, r)[0]

    def test_effect_within_the_noise_fails(self):
        """A gain of 0.2 with paired differences of spread 1: under 3 standard errors."""
        claim = cl.Claim("wide", "A", "B", "m", "lower", "effect", "")
        a = [0.0, 1.0, -1.0, 0.5, -0.5, 0.0]
        r = synthetic({"m": [x - 0.2 for x in a], **self.sharp}, {"m": a[::-1], **self.sharp})
        assert not cl.check_claim(claim, r)[0]

    def test_wrong_direction_fails(self):
        claim = cl.Claim("wide", "A", "B", "m", "higher", "effect", "")
        r = synthetic({"m": [1.0, 1.1, 0.9], **self.sharp}, {"m": [2.0, 2.1, 1.9], **self.sharp})
        assert not cl.check_claim(claim, r)[0]

    def test_fidelity_guard_fails_a_blurrier_win(self):
        """Lower intra-LPIPS with half the sharpness: blur, not coherence."""
        claim = cl.Claim("wide", "A", "B", "m", "lower", "effect", "")
        r = synthetic({"m": [1.0, 1.1, 0.9], "sharpness_vs_ref": [0.5] * 3},
                      {"m": [2.0, 2.1, 1.9], "sharpness_vs_ref": [1.0] * 3})
        ok, line = cl.check_claim(claim, r)
        assert not ok and "fidelity guard: sharpness 0.50×" in line

    def test_a_missing_metric_fails_the_claim(self):
        claim = cl.Claim("wide", "A", "B", "m", "lower", "effect", "")
        ok, line = cl.check_claim(claim, synthetic({**self.sharp}, {"m": [2.0] * 6, **self.sharp}))
        assert not ok and line.endswith("the results hold no m for A")

    def test_differs_and_same_mechanisms(self):
        differs = cl.Claim("wide", "A", "B", "thumbnail", "differs", "mechanism", "")
        same = cl.Claim("wide", "A", "B", "thumbnail", "same", "mechanism", "")
        equal = synthetic({"thumbnail": [[0.0, 1.0]] * 3}, {"thumbnail": [[0.0, 1.0]] * 3})
        apart = synthetic({"thumbnail": [[0.0, 1.0]] * 3}, {"thumbnail": [[0.1, 0.9]] * 3})
        assert not cl.check_claim(differs, equal)[0] and cl.check_claim(differs, apart)[0]
        assert cl.check_claim(same, equal)[0] and not cl.check_claim(same, apart)[0]


class TestStoredRun:
    def test_every_claim_holds_on_main(self, results):
        """The calibration run of the CI configuration: every claim passes (the check CI runs)."""
        lines, failures = cl.check_claims(results)
        assert len(lines) == len(cl.CLAIMS) and failures == [], "\n".join(lines)

    @pytest.mark.parametrize("claim", cl.CLAIMS, ids=lambda c: c.label)
    def test_each_claim_fails_when_the_method_behaves_like_its_ablation(self, results, claim):
        """"X behaves like Y" for every claim's own pair (for "same": MAD over one window behaves like a world scene)."""
        other = claim.ablation if claim.better != "same" else "World scenes (reference)"
        broken = cl.behaves_like(results, claim.canvas, claim.method, other)
        assert not cl.check_claim(claim, broken)[0]

    @pytest.mark.parametrize("canvas, method, like", [
        ("wide", "Guided Fusion", "MultiDiffusion"),
        ("wide", "MD + Style Alignment", "MultiDiffusion"),
        ("wide", "GF + Style Alignment", "Guided Fusion"),
        ("wide", "MAD", "MultiDiffusion"),
        ("wide", "MAD (τ 1)", "MultiDiffusion"),
        ("2-D", "MSD", "MultiDiffusion"),
        ("wide", "SyncDiffusion", "MultiDiffusion"),
        ("wide", "VCF (stochastic)", "MD stochastic (plain avg.)"),
        ("wide", "MultiDiffusion", "Independent windows"),
    ])
    def test_audit_degenerations_are_caught(self, results, canvas, method, like):
        """The held-out audit's uncaught degenerations ([B]: GF → MD, MD+SA → MD, GF+SA → GF, MAD → MD, MAD τ1 → MD,
        MSD → MD) and the rest: the whole CI check (claims) fails, naming the method."""
        _, failures = cl.check_claims(cl.behaves_like(results, canvas, method, like))
        assert any(method in f for f in failures), failures


SD_LIKE = STORED.parent / "coherence_sd_like.json"


@pytest.fixture(scope="module")
def sd_like():
    return json.loads(SD_LIKE.read_text())


class TestSDLikeWorld:
    """[B] item 3: the SD-like world's stored full run (bench/results/coherence_sd_like.json: MD, MAD, MAD τ1, MD on the
    latent sampler, MSD; 16 seeds, 10 steps). MAD τ1 is held to the paper's effect there, and only there."""

    def test_its_claims_hold(self, sd_like):
        lines, failures = cl.check_claims(sd_like)
        assert failures == [] and sum(line.startswith("PASS [effect] wide: MAD (τ 1)") for line in lines) == 2, lines

    @pytest.mark.parametrize("claim", cl.SD_LIKE_CLAIMS, ids=lambda c: c.label)
    def test_mad_behaving_like_multidiffusion_fails(self, sd_like, claim):
        assert not cl.check_claim(claim, cl.behaves_like(sd_like, "wide", "MAD (τ 1)", "MultiDiffusion"))[0]

    def test_blur_would_fail_the_guard(self, sd_like):
        """The effect is not blur: halving MAD τ1's sharpness (what a blurrier "win" looks like) fails both claims."""
        blurred = cl.behaves_like(sd_like, "wide", "MAD (τ 1)", "MAD (τ 1)")
        per_sample = blurred["canvases"]["wide"]["methods"]["MAD (τ 1)"]["per_sample"]
        per_sample["sharpness_vs_ref"] = [v / 2 for v in per_sample["sharpness_vs_ref"]]
        assert not any(cl.check_claim(claim, blurred)[0] for claim in cl.SD_LIKE_CLAIMS)

    def test_first_world_is_not_held_to_them(self, results):
        """The first world (attention at its two coarsest levels) showed no such effect; its runs are not held to it."""
        assert cl.claims_for(results) == cl.CLAIMS
        assert not all(cl.check_claim(claim, json.loads((STORED.parent / "coherence.json").read_text()))[0]
                       for claim in cl.SD_LIKE_CLAIMS)


class TestBands:
    def test_no_zero_width_band(self):
        bands = json.loads(BASELINE.read_text())["bands"]
        assert bands and all(b["tolerance"] > 0 for b in bands.values())

    def test_calibration_run_is_inside_its_bands(self, results):
        assert cl.check_bands(json.loads(BASELINE.read_text())["bands"], results) == []

    def test_a_shifted_metric_leaves_its_band(self, results):
        bands = json.loads(BASELINE.read_text())["bands"]
        shifted = json.loads(json.dumps(results))
        seams = shifted["canvases"]["wide"]["methods"]["MultiDiffusion"]["per_sample"]["seam"]
        band = bands["wide|MultiDiffusion|seam"]
        seams[:] = [v + 2 * band["tolerance"] for v in seams]
        failures = cl.check_bands(bands, shifted)
        assert len(failures) == 1 and failures[0].startswith("wide|MultiDiffusion|seam: ") and "outside" in failures[0]

    def test_constant_metric_gets_no_band(self):
        r = {"canvases": {"wide": {"methods": {"A": {"per_sample": {"seam": [1.0, 1.0, 1.0]}}}}}}
        assert cl.calibrate_bands(r) == {}
