"""A real ComfyUI server for the e2e tier, and the HTTP helpers to drive it (no mocks).

``COMFYUI_PATH`` must point at a ComfyUI checkout. The server is started with the test
interpreter (``sys.executable``) as ``main.py --cpu --use-pytorch-cross-attention`` on a free
port of 127.0.0.1, with the pack symlinked into ``custom_nodes/vista`` and the random-weight
SD1.5 checkpoint (tools/make_test_checkpoint.py, cached in ``VISTA_TEST_CACHE``) made
visible through ``--extra-model-paths-config``. Output, temp, input and user folders live in
a per-session temporary folder, so the host checkout is left untouched (except for the
symlink, which is removed again unless it was already there).

Workflows are stored in the UI format the frontend saves; :func:`ui_to_api` (tools/comfy_api_format.py) turns
them into the API format ``POST /prompt`` takes, using ``GET /object_info`` for input names/order.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "vista"
CHECKPOINT = "vista_test_sd15.safetensors"
SDXL_CHECKPOINT = "vista_test_sdxl.safetensors"  # tools/make_test_checkpoint.py --family sdxl
SKIP_REASON = "COMFYUI_PATH not set: host tier skipped — set COMFYUI_PATH to a ComfyUI checkout to run it"


def run_coroutine(coro):
    """``asyncio.run(coro)`` in a thread of its own: after the browser tier, Playwright's sync API holds a running
    event loop in the main thread, where ``asyncio.run`` refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class PromptRejected(AssertionError):
    """``POST /prompt`` answered with an error status (validation failed)."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"/prompt rejected the prompt (HTTP {status}): {json.dumps(body)[:2000]}")
        self.status, self.body = status, body


def comfyui_path() -> Path:
    """The host checkout from ``COMFYUI_PATH``, or skip the calling test loudly."""
    value = os.environ.get("COMFYUI_PATH")
    if not value:
        pytest.skip(SKIP_REASON)
    path = Path(value).expanduser().resolve()
    if not (path / "main.py").is_file() or not (path / "comfy" / "sd.py").is_file():
        pytest.skip(f"{SKIP_REASON} (COMFYUI_PATH={value} is not a ComfyUI checkout: no main.py / comfy/sd.py)")
    return path


def cache_dir() -> Path:
    """Where generated test checkpoints are kept between runs."""
    return Path(os.environ.get("VISTA_TEST_CACHE", Path.home() / ".cache" / "vista-tests")).expanduser()


def build_checkpoint(cache: Path, host: Path, family: str = "sd15") -> Path:
    """Run tools/make_test_checkpoint.py in a subprocess (it imports the host; the tests must not)."""
    cmd = [sys.executable, str(REPO_ROOT / "tools" / "make_test_checkpoint.py"), str(cache), "--host", str(host),
           "--family", family]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"make_test_checkpoint failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    print(done.stdout.strip())
    return cache / (SDXL_CHECKPOINT if family == "sdxl" else CHECKPOINT)


def checkpoint_for(workflow: Path) -> str:
    """The test checkpoint that replaces a workflow's ``ckpt_name``: the SDXL-family one for workflows whose file
    name says ``sdxl`` (e.g. panorama_sdxl.json), else the SD1.5 one."""
    return SDXL_CHECKPOINT if "sdxl" in workflow.stem.lower() else CHECKPOINT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PackLink:
    """``custom_nodes/vista`` -> the repo: created here and removed at exit, or reused if already correct."""

    def __init__(self, host: Path, name: str = PACK_NAME):
        self.link = host / "custom_nodes" / name
        self.created = False

    def __enter__(self) -> Path:
        if not (self.link.is_symlink() or self.link.exists()):
            try:
                self.link.symlink_to(REPO_ROOT, target_is_directory=True)
                self.created = True
            except FileExistsError:  # another test session linked it meanwhile
                pass
        if self.link.resolve() != REPO_ROOT:
            pytest.fail(f"{self.link} exists and is not a link to {REPO_ROOT}; move it away to run the e2e tier")
        return self.link

    def __exit__(self, *exc) -> None:
        if self.created and self.link.is_symlink():
            self.link.unlink()


class ComfyServer:
    """One ``main.py`` process and a tiny HTTP client for it."""

    def __init__(self, host: Path, workdir: Path, checkpoints: Path):
        self.host, self.workdir, self.checkpoints = host, workdir, checkpoints
        self.output_dir, self.temp_dir = workdir / "output", workdir / "temp"
        self.log_path = workdir / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._object_info: dict | None = None

    def command(self) -> list[str]:
        for sub in ("output", "temp", "input", "user"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        paths = self.workdir / "extra_model_paths.yaml"
        paths.write_text(f"vista_tests:\n  checkpoints: {json.dumps(str(self.checkpoints))}\n")
        return [sys.executable, "main.py", "--cpu", "--use-pytorch-cross-attention",
                "--listen", "127.0.0.1", "--port", str(self.port),
                "--extra-model-paths-config", str(paths),
                "--output-directory", str(self.output_dir), "--temp-directory", str(self.workdir),
                "--input-directory", str(self.workdir / "input"), "--user-directory", str(self.workdir / "user"),
                "--database-url", f"sqlite:///{self.workdir / 'comfyui.db'}",
                "--disable-auto-launch"]

    def start(self, timeout: float = 180.0) -> None:
        """Start the server and wait until ``/object_info`` answers (fail with the log tail if not)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.host, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {self.process.returncode} during startup:\n{self.log_tail()}")
            try:
                self._object_info = self.get("/object_info", timeout=30)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                time.sleep(1.0)
        self.stop()
        pytest.fail(f"ComfyUI did not answer /object_info within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 80) -> str:
        if not self.log_path.is_file():
            return "(no server log)"
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=lines))

    # --- HTTP -------------------------------------------------------------------------
    def request(self, method: str, path: str, payload=None, timeout: float = 60.0) -> tuple[int, dict]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, json.loads(body)
            except json.JSONDecodeError:
                return err.code, {"raw": body.decode(errors="replace")}

    def get(self, path: str, timeout: float = 60.0) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def object_info(self) -> dict:
        if self._object_info is None:
            self._object_info = self.get("/object_info")
        return self._object_info

    def queue_prompt(self, api_prompt: dict) -> str:
        """``POST /prompt``; returns the prompt id, raises :class:`PromptRejected` on a validation error."""
        status, body = self.request("POST", "/prompt", {"prompt": api_prompt, "client_id": "vista-e2e"})
        if status != 200 or body.get("node_errors"):
            raise PromptRejected(status, body)
        return body["prompt_id"]

    def wait_history(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Poll ``/history/<id>`` until the prompt finished (success or error); return its entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    return entry
            if not self.alive():
                pytest.fail(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.5)
        self.request("POST", "/interrupt", {})
        pytest.fail(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def output_file(self, image: dict) -> Path:
        """The file behind one ``{"filename", "subfolder", "type"}`` entry of a history output."""
        base = self.output_dir if image.get("type", "output") == "output" else self.temp_dir  # --temp-directory D -> D/temp
        return base / image.get("subfolder", "") / image["filename"]


# --- UI workflow -> API prompt: the converter lives in tools/comfy_api_format.py (tools/run_workflow.py uses it) ---
sys.path.append(str(REPO_ROOT / "tools"))  # appended, so it shadows nothing; the repo root stays off sys.path
import comfy_api_format  # noqa: E402

_ordered_inputs, _is_widget = comfy_api_format.ordered_inputs, comfy_api_format.is_widget
_has_control_widget, _has_upload_widget = comfy_api_format.has_control_widget, comfy_api_format.has_upload_widget


def ui_to_api(ui: dict, object_info: dict, checkpoint: str | None = CHECKPOINT) -> dict:
    """:func:`comfy_api_format.ui_to_api` (frontend rules, raises KeyError on an unknown node type), then
    ``ckpt_name`` of CheckpointLoaderSimple replaced by ``checkpoint`` unless that is None."""
    prompt = comfy_api_format.ui_to_api(ui, object_info)
    if checkpoint is not None:
        for node in nodes_of(prompt, "CheckpointLoaderSimple").values():
            node["inputs"]["ckpt_name"] = checkpoint
    return prompt


def nodes_of(prompt: dict, class_type: str) -> dict:
    """{node_id: node} of one class in an API prompt."""
    return {k: v for k, v in prompt.items() if v["class_type"] == class_type}
