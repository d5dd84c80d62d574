"""Run a ComfyUI workflow headless: queue it, show its progress, save its outputs.

Usage::

    python tools/run_workflow.py workflows/panorama_multidiffusion.json [--server 127.0.0.1:8188]
        [--set NODE.INPUT=VALUE ...] [--out DIR] [--comfyui PATH] [--python PY] [--cpu | --gpu] [--smoke]
        [--timeout S] [--log FILE]

The workflow is the frontend's saved graph (like ``workflows/*.json``) or an API prompt; a graph is
converted through the server's ``GET /object_info`` (tools/comfy_api_format.py). ``--set`` changes one
input (NODE: a node id, a node title or a class type that names exactly one node; VALUE: JSON where it
parses, e.g. ``512``, ``true``, ``"text"``, else the plain string); node names are checked against the
workflow file before any server is contacted, and input names too where the file or the pack's own table
of widget names (tools/draw_thumbnails.py ``WIDGETS``: the Vista nodes and the stock loaders, latents and
samplers) tells them; other input names are checked against the server's ``/object_info``. The prompt is
queued through ``POST /prompt``; ComfyUI's websocket (``/ws?clientId=…``) feeds one progress bar per node
on stderr (one scale per bar: the first total the node reports; Vista's per-window-batch reports and the
sampler's per-step reports are put on it) and brings the Vista nodes' warnings (``vista.warning``, e.g. a
window clamped to the canvas), which are printed as ``run_workflow: warning: …``; every image, gif or video
the run produced is fetched through ``/view`` into ``--out`` (default ``./vista_outputs``) and its path
printed on stdout. Seeds are used as saved ('control after generate' is a frontend action), so the same
command gives the same images.

When no server answers at ``--server`` and a ComfyUI checkout is given (``--comfyui`` or ``COMFYUI_PATH``),
the runner starts that ComfyUI itself (``--python``, default this interpreter; ``main.py`` on a free
127.0.0.1 port, output/temp/user folders and its log in a temporary folder), with this pack linked into
``custom_nodes/vista`` (removed afterwards), runs the workflow and stops it again. It runs on the
accelerator that interpreter's torch finds, in the order ComfyUI itself picks one (comfy/model_management.py:
Intel XPU, Apple MPS, Ascend NPU, Cambricon MLU, else CUDA/ROCm); where torch finds none it adds ``--cpu``
(ComfyUI without ``--cpu`` fails at import on a CPU-only torch). ``--cpu`` forces the CPU, ``--gpu`` starts
it without ``--cpu`` whatever torch reports. The started server's log is removed after a successful run;
after a failure it is kept as ``vista-comfyui-last.log`` in the system's temporary folder (one file,
replaced by the next failure), or wherever ``--log`` says. ``--smoke`` replaces every ``ckpt_name`` by the
random-weight test checkpoint (tools/make_test_checkpoint.py, built once into ``VISTA_TEST_CACHE``, default
~/.cache/vista-tests; the SDXL-family one for workflows named ``*sdxl*``), which a started ComfyUI sees
through ``--extra-model-paths-config``; nothing else is shrunk: the workflow's canvas and steps cost what
they cost (panorama_multidiffusion.json at 2048x512 and 20 steps: about 40 min on 2 CPU cores; shrink it
with ``--set``).

Errors end the run with one message and a non-zero exit code: 1 unreadable workflow, 2 bad arguments
(``--set``), 3 no server / server failed, 4 missing model file or node type, 5 validation failed at
``/prompt``, 6 execution error or interruption, 7 ``--timeout`` reached, 130 Ctrl-C, 143 SIGTERM (129
SIGHUP). Ctrl-C, SIGTERM and SIGHUP cancel the prompt, stop a ComfyUI the runner started, remove the
``custom_nodes/vista`` link and the temporary folder. Needs aiohttp (in ComfyUI's requirements) for the
websocket; tqdm draws the bars when installed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent))  # comfy_api_format sits next to this file
import comfy_api_format as api_format  # noqa: E402

try:
    import aiohttp
except ImportError:  # reported when the websocket is needed
    aiohttp = None
try:
    from tqdm import tqdm
except ImportError:
    tqdm = None

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "vista"
SMOKE_CHECKPOINTS = {"sd15": "vista_test_sd15.safetensors", "sdxl": "vista_test_sdxl.safetensors"}
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx")
# Model inputs of the stock loaders -> the ComfyUI model folder they list (digits stripped: clip_name2 -> clip_name).
MODEL_FOLDERS = {"ckpt_name": "checkpoints", "vae_name": "vae", "lora_name": "loras", "unet_name": "diffusion_models",
                 "clip_name": "text_encoders", "control_net_name": "controlnet", "style_model_name": "style_models",
                 "gligen_name": "gligen", "hypernetwork_name": "hypernetworks", "model_name": "upscale_models"}
NET_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError)
EXIT_ERROR, EXIT_USAGE, EXIT_SERVER, EXIT_MISSING, EXIT_INVALID, EXIT_FAILED, EXIT_TIMEOUT = 1, 2, 3, 4, 5, 6, 7
EXIT_CTRL_C = 130
WARNING_EVENT = "vista.warning"  # nodes/notify.py: {"node": display name, "message": the warning}
LAST_LOG = "vista-comfyui-last.log"  # a failed run's server log, in the system's temporary folder
ACCELERATOR_PREFIX = "vista-accelerator:"
# What ComfyUI would run on without --cpu, in its own order (comfy/model_management.py: XPU, MPS, NPU, MLU,
# else torch.cuda.current_device(), which raises on a CPU-only torch). Prints "KIND NAME" or nothing.
DETECT_ACCELERATOR = """
import torch
def found():
    try:
        if torch.xpu.device_count() and torch.xpu.is_available():
            return "xpu " + torch.xpu.get_device_name(0)
    except Exception:
        pass
    try:
        if torch.backends.mps.is_available():
            return "mps Apple GPU"
    except Exception:
        pass
    for module, kind in (("torch_npu", "npu"), ("torch_mlu", "mlu")):
        try:
            __import__(module)
            if getattr(torch, kind).is_available():
                return kind
        except Exception:
            pass
    try:
        if torch.cuda.is_available():
            return ("rocm " if torch.version.hip else "cuda ") + torch.cuda.get_device_name(0)
    except Exception:
        pass
    return ""
print("%s" + found())
""" % ACCELERATOR_PREFIX


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``timeout``, a CI cancel, ``kill``, a closed terminal): unwound like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _terminate(signum, frame):
    for sig in TERMINATING_SIGNALS:  # a second signal must not break the cleanup half-way
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class RunError(Exception):
    """A failure reported as one message (no traceback) with the exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


def note(message: str) -> None:
    print(f"run_workflow: {message}", file=sys.stderr, flush=True)


# --- HTTP ----------------------------------------------------------------------------------
class Client:
    """A small urllib client for one ComfyUI server at ``host:port`` (never through an HTTP proxy)."""

    def __init__(self, address: str):
        self.address = address.split("://", 1)[-1].rstrip("/")
        self.url = f"http://{self.address}"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str, timeout: float = 60.0) -> bytes:
        with self.opener.open(self.url + path, timeout=timeout) as resp:
            return resp.read()

    def get_json(self, path: str, timeout: float = 60.0):
        return json.loads(self.get(path, timeout))

    def post_json(self, path: str, payload: dict, timeout: float = 60.0) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                body = resp.read()
                return resp.status, json.loads(body) if body.strip() else {}
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, json.loads(body)
            except json.JSONDecodeError:
                return err.code, {"error": {"message": body.decode(errors="replace")[:2000]}}

    def answers(self, timeout: float = 3.0) -> bool:
        """True if a ComfyUI server answers ``/system_stats`` here."""
        try:
            return isinstance(self.get_json("/system_stats", timeout), dict)
        except (*NET_ERRORS, OSError):
            return False


# --- a ComfyUI started by the runner -------------------------------------------------------
@dataclass
class Server:
    client: Client
    log: Path | None = None  # where a started ComfyUI's log is kept after a failure (None: not started here)
    checkout: Path | None = None  # the checkout the runner started
    work: Path | None = None  # the started ComfyUI's temporary folder (removed at the end)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkout_path(value: str) -> Path:
    path = Path(value).expanduser().resolve()
    if not (path / "main.py").is_file() or not (path / "custom_nodes").is_dir():
        raise RunError(f"{value} is not a ComfyUI checkout (no main.py or custom_nodes/ in it)", EXIT_SERVER)
    return path


@contextlib.contextmanager
def pack_link(checkout: Path):
    """``custom_nodes/vista`` -> this checkout for the duration; nothing to do if the pack is installed there."""
    custom_nodes = checkout / "custom_nodes"
    if REPO_ROOT.parent == custom_nodes.resolve():
        yield
        return
    link, created = custom_nodes / PACK_NAME, False
    if not (link.is_symlink() or link.exists()):
        with contextlib.suppress(FileExistsError):  # another run linked it meanwhile
            link.symlink_to(REPO_ROOT, target_is_directory=True)
            created = True
    if link.resolve() != REPO_ROOT:
        raise RunError(f"{link} exists and is not this Vista checkout ({REPO_ROOT}); move it away, or start that "
                       f"ComfyUI yourself and pass --server", EXIT_SERVER)
    try:
        yield
    finally:
        if created and link.is_symlink():
            link.unlink()


def smoke_family(workflow: Path) -> str:
    """The test checkpoint family for a workflow: sdxl for files named ``*sdxl*`` (as the e2e tier does), else sd15."""
    return "sdxl" if "sdxl" in workflow.stem.lower() else "sd15"


def build_test_checkpoint(checkout: Path, python: str, family: str) -> Path:
    """tools/make_test_checkpoint.py into VISTA_TEST_CACHE (a no-op when the cached file is current)."""
    cache = Path(os.environ.get("VISTA_TEST_CACHE", Path.home() / ".cache" / "vista-tests")).expanduser()
    if not (cache / SMOKE_CHECKPOINTS[family]).is_file():
        note(f"--smoke: building the test checkpoint {SMOKE_CHECKPOINTS[family]} into {cache} (once; minutes)")
    cmd = [python, str(REPO_ROOT / "tools" / "make_test_checkpoint.py"), str(cache), "--host", str(checkout),
           "--family", family]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RunError(f"building the test checkpoint failed (exit {done.returncode}):\n{tail}", EXIT_SERVER)
    return cache / SMOKE_CHECKPOINTS[family]


def detect_accelerator(python: str) -> str | None:
    """``"KIND NAME"`` of the accelerator ``python``'s torch finds where ComfyUI would look for one, or None."""
    try:
        done = subprocess.run([python, "-c", DETECT_ACCELERATOR], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RunError(f"could not ask {python} for its torch device: {err}", EXIT_SERVER) from None
    found = [line[len(ACCELERATOR_PREFIX):].strip() for line in done.stdout.splitlines()
             if line.startswith(ACCELERATOR_PREFIX)]
    if done.returncode != 0 or not found:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise RunError(f"{python} cannot import torch (exit {done.returncode}); run this with ComfyUI's own Python "
                       f"or pass it as --python:\n{tail}", EXIT_SERVER)
    return found[0] or None


def use_cpu(args) -> bool:
    """Whether a started ComfyUI gets ``--cpu``: asked (--cpu), refused (--gpu), else where torch finds no accelerator."""
    if args.device == "cpu":
        note("--cpu: ComfyUI runs on the CPU")
        return True
    if args.device == "gpu":
        note("--gpu: ComfyUI starts without --cpu (it fails at import where torch finds no accelerator)")
        return False
    accelerator = detect_accelerator(args.python)
    if accelerator:
        note(f"ComfyUI runs on the accelerator torch finds: {accelerator} (--cpu to use the CPU instead)")
        return False
    note("no CUDA, ROCm, MPS, XPU, NPU or MLU device found by torch: ComfyUI runs on the CPU (--cpu; a full-size "
         "workflow takes tens of minutes there, shrink it with --set)")
    return True


def log_tail(log: Path, lines: int = 25) -> str:
    with open(log, encoding="utf-8", errors="replace") as f:
        return "".join(deque(f, maxlen=lines)).rstrip()


def comfyui_command(python: str, port: int, work: Path, cpu: bool, checkpoints: Path | None) -> list[str]:
    for sub in ("output", "user"):
        (work / sub).mkdir(exist_ok=True)
    cmd = [python, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--use-pytorch-cross-attention",
           "--output-directory", str(work / "output"), "--temp-directory", str(work),
           "--user-directory", str(work / "user"), "--database-url", f"sqlite:///{work / 'comfyui.db'}",
           "--disable-auto-launch"]
    if cpu:
        cmd.append("--cpu")
    if checkpoints is not None:
        paths = work / "extra_model_paths.yaml"
        paths.write_text(f"vista_run_workflow:\n  checkpoints: {json.dumps(str(checkpoints))}\n")
        cmd += ["--extra-model-paths-config", str(paths)]
    return cmd


def wait_until_up(client: Client, process: subprocess.Popen, log: Path, timeout: float, hint: str = "") -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RunError(f"ComfyUI exited with code {process.returncode} while starting{hint}; its log ends with:\n"
                           f"{log_tail(log)}", EXIT_SERVER)
        if client.answers(timeout=5.0):
            note(f"ComfyUI is up after {time.monotonic() - start:.0f} s")
            return
        time.sleep(1.0)
    raise RunError(f"ComfyUI did not answer within {timeout:.0f} s (--startup-timeout); its log ends with:\n"
                   f"{log_tail(log)}", EXIT_SERVER)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@contextlib.contextmanager
def started_comfyui(args, family: str | None):
    """Start the ComfyUI checkout with the pack linked in, yield a :class:`Server`, stop it again.

    Output, temp and user folders and the server log live in a temporary folder, removed at the end (also on
    Ctrl-C, SIGTERM and SIGHUP). After a failure (a :class:`RunError`) the log is kept: at ``--log`` if given,
    else as ``vista-comfyui-last.log`` in the system's temporary folder, replacing an earlier failure's. The
    checkout's own models/ and input/ folders are used as they are.
    """
    checkout = checkout_path(args.comfyui)
    checkpoints = build_test_checkpoint(checkout, args.python, family).parent if family else None
    cpu = use_cpu(args)
    kept = Path(args.log).expanduser().resolve() if args.log else Path(tempfile.gettempdir()) / LAST_LOG
    with tempfile.TemporaryDirectory(prefix="vista-run-") as tmp, pack_link(checkout):
        work = Path(tmp)
        log = work / "comfyui.log"
        port, process, failed = free_port(), None, False
        try:
            with open(log, "wb") as out:
                process = subprocess.Popen(comfyui_command(args.python, port, work, cpu, checkpoints),
                                           cwd=checkout, stdout=out, stderr=subprocess.STDOUT,
                                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
            note(f"starting ComfyUI from {checkout} on 127.0.0.1:{port} (pid {process.pid}; temporary folder: {work})")
            client = Client(f"127.0.0.1:{port}")
            hint = " (started without --cpu because of --gpu)" if args.device == "gpu" else ""
            wait_until_up(client, process, log, args.startup_timeout, hint)
            yield Server(client, kept, checkout, work)
        except RunError:
            failed = True
            raise
        finally:  # also on Ctrl-C and SIGTERM/SIGHUP (Terminated): never leave the server running
            if process is not None:
                stop(process)
            if (failed or args.log) and log.is_file():
                shutil.copyfile(log, kept)
                if failed:
                    note(f"the started ComfyUI's log is kept: {kept}")


# --- the prompt ----------------------------------------------------------------------------
def load_workflow(path: Path) -> dict:
    try:
        workflow = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise RunError(f"cannot read the workflow {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise RunError(f"{path} is not JSON: {err}") from None
    if not isinstance(workflow, dict):
        raise RunError(f"{path} is not a ComfyUI workflow (a JSON object was expected)")
    return workflow


def node_title(node: dict, info: dict) -> str:
    """The node's own title, else its class's display name (``Vista Tiled Diffusion``)."""
    kind = node.get("class_type")
    title = (node.get("_meta") or {}).get("title") or kind
    return (info.get(kind) or {}).get("display_name") or kind if title == kind else title


def describe(prompt: dict, node_id: str, info: dict) -> str:
    """``node 2 'Vista Tiled Diffusion' (VistaTiledDiffusion)``: id, title (else display name) and class."""
    node = prompt.get(str(node_id))
    return f"node {node_id}" if node is None else f"node {node_id} '{node_title(node, info)}' ({node['class_type']})"


def missing_nodes_message(missing: list, log: Path | None) -> str:
    lines = ["this ComfyUI does not have the node type(s) the workflow needs:"]
    for node_id, title, kind in missing:
        hint = f" — a Vista node: update this pack ({REPO_ROOT})" if str(kind).startswith("Vista") else ""
        lines.append(f"  node {node_id} '{title}': {kind}{hint}")
    if log:  # a ComfyUI the runner started: the next run starts a fresh one
        lines.append("Install or update the custom node pack that provides each type in that checkout's custom_nodes/ "
                     f"(ComfyUI-Manager finds packs by node type) and run again; look for 'IMPORT FAILED' in the "
                     f"ComfyUI log {log}.")
    else:
        lines.append("Install or update the custom node pack that provides each type (ComfyUI-Manager finds packs by "
                     "node type), restart ComfyUI, and look for 'IMPORT FAILED' in ComfyUI's console output.")
    return "\n".join(lines)


def to_prompt(workflow: dict, info: dict, log: Path | None) -> dict:
    try:
        return api_format.to_api(workflow, info)
    except api_format.UnknownNodeTypes as err:
        raise RunError(missing_nodes_message(err.missing, log), EXIT_MISSING) from None
    except api_format.ConversionError as err:
        raise RunError(str(err)) from None


def parse_set(text: str) -> tuple[str, str, object]:
    """``NODE.INPUT=VALUE`` -> (NODE, INPUT, VALUE parsed as JSON where it parses, else the string)."""
    target, equals, raw = text.partition("=")
    node, dot, name = target.rpartition(".")
    if not (equals and dot and node and name):
        raise RunError(f"--set {text!r}: expected NODE.INPUT=VALUE (NODE: a node id, title or class type)", EXIT_USAGE)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return node, name, value


def offline_nodes(workflow: dict) -> dict:
    """The nodes a workflow file sends to /prompt, as ``{id: {class_type, _meta.title, inputs}}`` without a server.

    Same ids, titles and class types as the prompt :func:`to_prompt` makes (frontend-only, muted and bypassed
    nodes dropped); ``inputs`` holds the input names the file itself shows (a UI graph's sockets and the
    widgets a recent frontend lists there; an API prompt's keys).
    """
    if api_format.is_ui_format(workflow):
        return {str(n["id"]): {"class_type": n["type"], "_meta": {"title": n.get("title") or n["type"]},
                               "inputs": {i["name"]: None for i in n.get("inputs") or [] if i.get("name")},
                               "widgets_named": any("widget" in i for i in n.get("inputs") or [])}
                for n in workflow["nodes"] if isinstance(n, dict) and "type" in n and "id" in n
                and n["type"] not in api_format.FRONTEND_ONLY
                and n.get("mode", 0) not in (api_format.MUTED, api_format.BYPASSED)}
    body = workflow.get("prompt") if isinstance(workflow.get("prompt"), dict) else workflow
    return {str(k): {"class_type": v["class_type"], "_meta": v.get("_meta") or {}, "inputs": dict(v.get("inputs") or {})}
            for k, v in body.items() if isinstance(v, dict) and "class_type" in v}


def widget_names() -> dict:
    """``{class type: widget input names}`` that tools/draw_thumbnails.py keeps for the Vista nodes and the stock
    loaders, latents and samplers (checked against both supported hosts' schemas by tests/host/test_node_docs.py);
    empty when that module cannot be imported (it needs Pillow, which ComfyUI ships)."""
    try:
        import draw_thumbnails
    except ImportError:
        return {}
    return {kind: tuple(n for n in names if n != draw_thumbnails.CONTROL) for kind, names in draw_thumbnails.WIDGETS.items()}


def check_sets_offline(workflow: dict, sets: list[tuple[str, str, object]]) -> None:
    """Fail on a ``--set`` whose node the workflow file does not have, or whose input the node cannot have,
    before a server is contacted or started; input names the file does not tell are left to the server."""
    nodes, widgets = offline_nodes(workflow), None
    for key, name, _ in sets:
        node_id = find_node(nodes, key, {})
        node = nodes[node_id]
        if name in node["inputs"]:
            continue
        widgets = widget_names() if widgets is None else widgets
        if node["class_type"] in widgets:
            names = list(dict.fromkeys([*widgets[node["class_type"]], *node["inputs"]]))
        elif node.get("widgets_named"):
            names = list(node["inputs"])
        else:
            continue  # the node's widget names are only in the server's /object_info
        if name not in names:
            raise RunError(f"--set: {describe(nodes, node_id, {})} has no input '{name}'; its inputs: "
                           f"{', '.join(names)}", EXIT_USAGE)


def find_node(prompt: dict, key: str, info: dict) -> str:
    """The one node id that ``key`` names (an id, else the nodes whose title or class type is ``key``)."""
    if key in prompt:
        return key
    matches = [i for i, n in prompt.items() if key in ((n.get("_meta") or {}).get("title"), n["class_type"])]
    if len(matches) == 1:
        return matches[0]
    listed = "\n".join(f"  {describe(prompt, i, info)}" for i in (matches or prompt))
    if matches:
        raise RunError(f"--set: '{key}' matches {len(matches)} nodes; name one by its id:\n{listed}", EXIT_USAGE)
    raise RunError(f"--set: no node has the id, title or class type '{key}'; the workflow's nodes:\n{listed}",
                   EXIT_USAGE)


def apply_sets(prompt: dict, sets: list[tuple[str, str, object]], info: dict) -> None:
    for key, name, value in sets:
        node_id = find_node(prompt, key, info)
        node = prompt[node_id]
        names = [n for n, _ in api_format.ordered_inputs(info[node["class_type"]])]
        if name not in names:
            raise RunError(f"--set: {describe(prompt, node_id, info)} has no input '{name}'; its inputs: "
                           f"{', '.join(names)}", EXIT_USAGE)
        node["inputs"][name] = value
        note(f"--set {describe(prompt, node_id, info)}: {name} = {json.dumps(value)}")


def use_test_checkpoint(prompt: dict, checkpoint: str) -> None:
    for node in prompt.values():
        if isinstance(node["inputs"].get("ckpt_name"), str):
            node["inputs"]["ckpt_name"] = checkpoint


def missing_models(prompt: dict, info: dict):
    """(node id, input, value, options) for every model-file combo whose value the server does not list."""
    for node_id, node in prompt.items():
        specs = dict(api_format.ordered_inputs(info[node["class_type"]]))
        for name, value in node["inputs"].items():
            options = api_format.combo_options(specs.get(name))
            if options is None or not isinstance(value, str) or value in options:
                continue
            if value.lower().endswith(MODEL_SUFFIXES) or any(str(o).lower().endswith(MODEL_SUFFIXES) for o in options):
                yield node_id, name, value, options


def model_folder(client: Client, name: str, options: list) -> tuple[str | None, list[str]]:
    """The model folder an input lists (by name for the stock loaders, else by matching its options) and
    the directories ComfyUI searches for it (``GET /experiment/models``)."""
    try:
        folders = {f["name"]: f.get("folders") or [] for f in client.get_json("/experiment/models")}
    except (*NET_ERRORS, OSError, KeyError, TypeError):
        return MODEL_FOLDERS.get(name.rstrip("0123456789")), []
    folder = MODEL_FOLDERS.get(name.rstrip("0123456789"))
    if folder not in folders and options:
        for candidate in folders:
            with contextlib.suppress(*NET_ERRORS, OSError):
                if sorted(client.get_json(f"/models/{candidate}")) == sorted(options):
                    folder = candidate
                    break
    return folder, folders.get(folder, [])


def check_models(server: Server, prompt: dict, info: dict, smoke: bool) -> None:
    """Fail on model-file inputs whose value the server does not list, naming the folders to put the file in.

    ComfyUI lists a file added to a model folder without a restart (its folder listing is cached by the
    folders' modification times); a ComfyUI the runner started is a fresh one on every run anyway. The
    started server's temporary output folder (ComfyUI lists ``output/checkpoints`` too) is left out.
    """
    problems = []
    for node_id, name, value, options in missing_models(prompt, info):
        folder, paths = model_folder(server.client, name, options)
        if server.work is not None:
            paths = [p for p in paths if not Path(p).resolve().is_relative_to(server.work.resolve())]
        where = f"ComfyUI's {folder} folder" if folder else "the model folder this input lists"
        looks = f"; ComfyUI looks in: {', '.join(paths)}" if paths else ""
        has = ", ".join(map(str, options[:8])) + (", …" if len(options) > 8 else "") if options else "none"
        put = "put the file into " + (paths[0] if paths else "that folder")
        put += (" and run again" if server.work is not None else
                " (ComfyUI lists new model files without a restart) and run again")
        problems.append(f"  {describe(prompt, node_id, info)}, input {name}: '{value}' is not in {where}{looks}\n"
                        f"    {put}, or pick one it has with --set {node_id}.{name}=NAME (it has: {has})")
    if problems:
        hint = ("--smoke makes the test checkpoint visible only to a ComfyUI this runner starts (--comfyui)" if smoke
                else "or run with --smoke to use the random-weight test checkpoint")
        raise RunError("missing model file(s):\n" + "\n".join(problems) + f"\n  ({hint})", EXIT_MISSING)


def rejection_message(body: dict, prompt: dict, info: dict) -> str:
    """``/prompt``'s 400 answer as lines: node id/title/class, input, message (custom validation deduplicated:
    ComfyUI repeats it for every input the node's validate_inputs names)."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {"message": str(body.get("error", ""))}
    lines, seen = [f"ComfyUI rejected the workflow: {error.get('message') or 'validation failed'}"], set()
    for node_id, entry in (body.get("node_errors") or {}).items():
        for e in entry.get("errors") or []:
            name, details = (e.get("extra_info") or {}).get("input_name"), str(e.get("details") or "")
            if e.get("type") == "custom_validation_failed":
                name, details = None, details.split(" - ", 1)[-1]
            text = e.get("message") or e.get("type") or "invalid"
            if details and details != name:
                text += f": {details}"
            line = f"  {describe(prompt, node_id, info)}" + (f", input {name}" if name else "") + f": {text}"
            if line not in seen:
                seen.add(line)
                lines.append(line)
    if len(lines) == 1 and error.get("details"):
        lines.append(f"  {error['details']}")
    return "\n".join(lines)


# --- progress ------------------------------------------------------------------------------
class TextBar:
    """The few tqdm members :class:`Progress` uses, as a plain text bar."""

    def __init__(self, desc: str, total: int, file):
        self.desc, self.total, self.n, self.file = desc, total, 0, file

    def refresh(self) -> None:
        filled = int(20 * self.n / self.total) if self.total else 0
        self.file.write(f"\r{self.desc}: [{'#' * filled}{'.' * (20 - filled)}] {self.n}/{self.total}")
        self.file.flush()

    def close(self) -> None:
        self.refresh()
        self.file.write("\n")


BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"


class Progress:
    """One bar per executed node on stderr, named ``[k/n] #id title``, fed by the websocket's messages.

    A bar keeps one scale: the total of the node's first progress report. A node may report on several
    (the sampler counts steps, ``(i + 1)/steps``; Vista's samplers count window batches, ``(i·n + b)/(steps·n)``,
    nodes/_common.py ``WindowBatchProgress``): a report on another total is put on the bar's scale (rounded down).
    """

    def __init__(self, prompt: dict, info: dict, file=sys.stderr):
        self.labels = {i: f"#{i} {node_title(node, info)}" for i, node in prompt.items()}
        self.expected, self.count, self.file = len(prompt), 0, file
        self.node, self.bar, self.scale = None, None, None
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        """Print ``text`` on a line of its own above the current bar."""
        self.warnings.append(text)
        line = f"run_workflow: warning: {text}"
        if tqdm is not None and self.bar is not None:
            tqdm.write(line, file=self.file)
        else:
            self.file.write(("\n" if self.bar is not None else "") + line + "\n")
            if self.bar is not None:
                self.bar.refresh()
            self.file.flush()

    def cached(self, nodes: list) -> None:
        self.expected = len(self.labels) - len(nodes)

    def start(self, node: str) -> None:
        if node == self.node:
            return
        self.close()
        self.node, self.count, self.scale = node, self.count + 1, None
        desc = f"[{self.count}/{max(self.expected, self.count)}] {self.labels.get(node, f'#{node}')}"
        self.bar = (tqdm(desc=desc, total=1, file=self.file, leave=True, bar_format=BAR_FORMAT) if tqdm is not None
                    else TextBar(desc, 1, self.file))

    def update(self, node: str | None, value: int, maximum: int) -> None:
        if self.bar is None or (node is not None and node != self.node):
            self.start(node)
        if self.scale is None:
            self.scale = self.bar.total = max(int(maximum), 1)
        self.bar.n = min(int(value) * self.scale // max(int(maximum), 1), self.scale)
        self.bar.refresh()

    def close(self, complete: bool = True) -> None:
        """End the current bar, at 100% unless the node was cut short."""
        if self.bar is not None:
            if complete:
                self.bar.n = self.bar.total
            self.bar.close()
        self.node = self.bar = None


# --- the run -------------------------------------------------------------------------------
def execution_message(data: dict, prompt: dict, info: dict) -> str:
    node = describe(prompt, data.get("node_id"), info)
    kind = data.get("exception_type") or "error"
    return f"execution failed in {node}: {kind}: {str(data.get('exception_message', '')).strip()}"


async def follow(ws, prompt_id: str, prompt: dict, info: dict, progress: Progress) -> dict:
    """Read the websocket until the prompt ends; return {node id: ui output} of the executed nodes."""
    try:
        return await _follow(ws, prompt_id, prompt, info, progress)
    finally:
        progress.close(complete=False)  # an error, a timeout or Ctrl-C: the bar stops where the node was


async def _follow(ws, prompt_id: str, prompt: dict, info: dict, progress: Progress) -> dict:
    outputs, succeeded = {}, False
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:  # binary frames are latent previews
            continue
        event = json.loads(msg.data)
        kind, data = event.get("type"), event.get("data") or {}
        if kind == WARNING_EVENT:  # sent to the client of the running prompt (ours), without a prompt_id
            message, node = str(data.get("message", "")).strip(), str(data.get("node") or "Vista")
            progress.warn(message if message.startswith(node) else f"{node}: {message}")
            continue
        if data.get("prompt_id") != prompt_id:
            continue
        if kind == "execution_cached":
            progress.cached(data.get("nodes") or [])
        elif kind == "executing":  # node None: the prompt is done (sent after its history entry is written)
            if data.get("node") is None:
                progress.close()
                return outputs
            progress.start(data["node"])
        elif kind == "progress":
            progress.update(data.get("node"), data["value"], data["max"])
        elif kind == "executed":
            outputs[data.get("display_node") or data["node"]] = data.get("output") or {}
        elif kind == "execution_success":
            succeeded = True
        elif kind == "execution_interrupted":  # /interrupt, e.g. Cancel in a browser on the same server
            raise RunError(f"the run was interrupted in {describe(prompt, data.get('node_id'), info)}", EXIT_FAILED)
        elif kind == "execution_error":
            raise RunError(execution_message(data, prompt, info), EXIT_FAILED)
    if succeeded:
        progress.close()
        return outputs
    raise RunError("the server closed the websocket before the prompt finished (did ComfyUI stop?)", EXIT_SERVER)


def queue(client: Client, prompt: dict, client_id: str, info: dict) -> str:
    status, body = client.post_json("/prompt", {"prompt": prompt, "client_id": client_id})
    if status != 200 or "prompt_id" not in body:
        raise RunError(rejection_message(body, prompt, info), EXIT_INVALID)
    if body.get("node_errors"):  # queued, but some output nodes were dropped
        note(rejection_message(body, prompt, info).replace("rejected", "dropped parts of", 1))
    return body["prompt_id"]


async def execute(client: Client, prompt: dict, info: dict, timeout: float | None, ticket: dict) -> dict:
    """Queue ``prompt`` and follow it over the websocket; ``ticket["prompt_id"]`` is set once it is queued."""
    if aiohttp is None:
        raise RunError("the websocket needs aiohttp (in ComfyUI's requirements): run this with ComfyUI's Python")
    client_id = uuid.uuid4().hex
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://{client.address}/ws?clientId={client_id}", max_msg_size=0) as ws:
            ticket["prompt_id"] = prompt_id = queue(client, prompt, client_id, info)
            note(f"queued prompt {prompt_id}")
            ticket["progress"] = progress = Progress(prompt, info)
            try:
                return await asyncio.wait_for(follow(ws, prompt_id, prompt, info, progress), timeout)
            except asyncio.TimeoutError:
                cancel(client, prompt_id)
                raise RunError(f"the run did not finish within {timeout:g} s (--timeout); it was interrupted",
                               EXIT_TIMEOUT) from None


def cancel(client: Client, prompt_id: str) -> None:
    """Drop the prompt from the queue, or interrupt it if it is running."""
    with contextlib.suppress(*NET_ERRORS, OSError):
        client.post_json("/queue", {"delete": [prompt_id]}, timeout=10)
        client.post_json("/interrupt", {"prompt_id": prompt_id}, timeout=10)


def safe_relative(subfolder: str, filename: str) -> Path:
    parts = [p for p in PurePosixPath(subfolder.replace("\\", "/")).parts if p not in ("/", ".", "..")]
    return Path(*parts, PurePosixPath(filename.replace("\\", "/")).name)


def output_files(outputs: dict) -> list[dict]:
    """Every distinct file entry (``{filename, subfolder, type}`` under images/gifs/videos/…) of the outputs."""
    files = {}
    for output in outputs.values():
        for items in output.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    key = (item["filename"], item.get("subfolder", ""), item.get("type", "output"))
                    files.setdefault(key, dict(zip(("filename", "subfolder", "type"), key)))
    return list(files.values())


def save_outputs(client: Client, outputs: dict, out_dir: Path) -> list[Path]:
    """Fetch the output files through ``/view`` into ``out_dir`` (subfolders kept, earlier files never overwritten)."""
    saved = []
    for item in output_files(outputs):
        target = out_dir / safe_relative(item["subfolder"], item["filename"])
        target.parent.mkdir(parents=True, exist_ok=True)
        stem, index = target.stem, 1
        while target.exists():
            target, index = target.with_name(f"{stem}_{index}{target.suffix}"), index + 1
        target.write_bytes(client.get(f"/view?{urllib.parse.urlencode(item)}", timeout=300))
        saved.append(target)
    return saved


def server_device(client: Client) -> str:
    """The device a server runs on, from ``/system_stats`` (``cpu``, ``cuda:0 NVIDIA …``), or "unknown"."""
    try:
        devices = client.get_json("/system_stats", timeout=10).get("devices") or []
        return str(devices[0].get("name") or devices[0].get("type")) if devices else "unknown"
    except (*NET_ERRORS, OSError, AttributeError, IndexError):
        return "unknown"


def run_on(server: Server, workflow: dict, args) -> int:
    client = server.client
    try:
        info = client.get_json("/object_info", timeout=120)
    except (*NET_ERRORS, OSError) as err:
        raise RunError(f"{client.url}/object_info failed: {err}", EXIT_SERVER) from None
    note(f"ComfyUI at {client.address} runs on: {server_device(client)}")
    prompt = to_prompt(workflow, info, server.log)
    if args.smoke:
        use_test_checkpoint(prompt, SMOKE_CHECKPOINTS[smoke_family(args.workflow)])
    apply_sets(prompt, [parse_set(s) for s in args.set], info)
    check_models(server, prompt, info, args.smoke)
    ticket: dict = {}
    try:
        outputs = asyncio.run(execute(client, prompt, info, args.timeout, ticket))
    except KeyboardInterrupt:
        if ticket.get("prompt_id"):
            cancel(client, ticket["prompt_id"])
        raise
    try:
        history = client.get_json(f"/history/{ticket['prompt_id']}").get(ticket["prompt_id"]) or {}
        outputs = {**(history.get("outputs") or {}), **outputs}
    except (*NET_ERRORS, OSError):
        pass  # the websocket's 'executed' messages already carry the outputs
    saved = save_outputs(client, outputs, args.out)
    for path in saved:
        print(path, flush=True)
    note(f"saved {len(saved)} file(s) to {args.out}" if saved else "the workflow produced no image or video files")
    warnings = ticket["progress"].warnings
    if warnings:
        note(f"{len(warnings)} warning(s) from the Vista nodes during the run:\n" +
             "\n".join(f"  {text}" for text in warnings))
    return 0


def run(args) -> int:
    workflow = load_workflow(args.workflow)
    # Bad syntax, nodes the workflow lacks and inputs they cannot have fail before any server is asked or started.
    check_sets_offline(workflow, [parse_set(text) for text in args.set])
    client = Client(args.server)
    if client.answers():
        if args.device != "auto":
            note(f"--{args.device} applies only to a ComfyUI this runner starts; the one at {client.address} keeps "
                 f"its own device")
        return run_on(Server(client), workflow, args)
    if not args.comfyui:
        raise RunError(f"no ComfyUI answers at {client.url}: start ComfyUI there, point --server at a running one, "
                       f"or give a ComfyUI checkout (--comfyui PATH or COMFYUI_PATH) for the runner to start",
                       EXIT_SERVER)
    note(f"no ComfyUI answers at {client.url}; starting one")
    with started_comfyui(args, smoke_family(args.workflow) if args.smoke else None) as server:
        return run_on(server, workflow, args)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Exit codes: 1 workflow, 2 arguments, 3 server, 4 missing model/node, "
                                            "5 validation, 6 execution, 7 timeout, 130 Ctrl-C, 143 SIGTERM "
                                            "(129 SIGHUP). Ctrl-C, SIGTERM and SIGHUP cancel the prompt and stop a "
                                            "ComfyUI the runner started.")
    parser.add_argument("workflow", type=Path, help="UI-format (frontend) or API-format workflow JSON")
    parser.add_argument("--server", default="127.0.0.1:8188", help="HOST:PORT of a running ComfyUI (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="change an input; NODE = node id, title or class type (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("vista_outputs"), help="output folder (default %(default)s)")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"),
                        help="ComfyUI checkout to start when no server answers (default $COMFYUI_PATH)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for a started ComfyUI (default: this one)")
    device = parser.add_mutually_exclusive_group()
    device.add_argument("--cpu", dest="device", action="store_const", const="cpu", default="auto",
                        help="start ComfyUI with --cpu (default: on the accelerator torch finds; --cpu where it "
                             "finds none)")
    device.add_argument("--gpu", dest="device", action="store_const", const="gpu",
                        help="start ComfyUI without --cpu whatever torch reports")
    parser.add_argument("--smoke", action="store_true",
                        help="use the random-weight test checkpoint for every ckpt_name (images are noise; the "
                             "canvas and steps are the workflow's: shrink them with --set on a CPU)")
    parser.add_argument("--log", type=Path, default=None,
                        help=f"keep a started ComfyUI's log here (default: removed after a success, kept as "
                             f"{LAST_LOG} in the temporary folder after a failure)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds the run may take once queued")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds a started ComfyUI may take to answer")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for sig in TERMINATING_SIGNALS:
        signal.signal(sig, _terminate)
    try:
        return run(args)
    except RunError as err:
        print(f"run_workflow: error: {err}", file=sys.stderr)
        return err.code
    except Terminated as err:
        print(f"run_workflow: terminated ({err.name}); the prompt was cancelled, a ComfyUI started here stopped",
              file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("run_workflow: interrupted (Ctrl-C); the prompt was cancelled", file=sys.stderr)
        return EXIT_CTRL_C


if __name__ == "__main__":
    sys.exit(main())
