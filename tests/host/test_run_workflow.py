"""Host tier: tools/run_workflow.py as a user runs it (a subprocess) against a real ComfyUI (COMFYUI_PATH), no mocks.

The error cases and the API-format run share the session's server (conftest ``comfyui_server``, which lists
the random-weight test checkpoint); three tests let the runner start the host checkout itself (a success, a
failure, SIGTERM), each with a temporary folder of its own (TMPDIR) to see what a run leaves behind. Canvases,
windows and steps are shrunk with ``--set`` so every run stays well under a minute on 2 CPU cores.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import comfy_server
import comfy_api_format  # tools/ (comfy_server puts it on sys.path)

pytestmark = [pytest.mark.host, pytest.mark.e2e]

RUNNER = comfy_server.REPO_ROOT / "tools" / "run_workflow.py"
PANORAMA = comfy_server.REPO_ROOT / "workflows" / "panorama_multidiffusion.json"
# panorama_multidiffusion.json on a 192x128 canvas: 2 windows of 128 px (stride 64), 2 steps.
SMALL = ["--set", "EmptyLatentImage.width=192", "--set", "EmptyLatentImage.height=128",
         "--set", "VistaTiledDiffusion.window_width=128", "--set", "VistaTiledDiffusion.window_height=128",
         "--set", "VistaTiledDiffusion.stride_x=64", "--set", "VistaTiledDiffusion.stride_y=64",
         "--set", "KSampler.steps=2"]
# The same on a 384x384 canvas for 50 steps: a run that is still sampling when it is cut short.
SLOW = [*SMALL, "--set", "EmptyLatentImage.width=384", "--set", "EmptyLatentImage.height=384", "--set", "KSampler.steps=50"]
TIMEOUT = 600


def run_workflow(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python tools/run_workflow.py ARGS`` with the test interpreter (the host's venv)."""
    done = subprocess.run([sys.executable, str(RUNNER), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT, env=env)
    print(f"$ run_workflow {' '.join(map(str, args))}\n-> exit {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def on(server) -> list[str]:
    return ["--server", server.url.removeprefix("http://")]


def assert_one_error(done: subprocess.CompletedProcess, code: int) -> str:
    """Exit ``code``, one 'run_workflow: error:' message, no Python traceback; return the message."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("run_workflow: error:") == 1, done.stderr
    return done.stderr.split("run_workflow: error:", 1)[1]


def temp_env(tmp_path: Path) -> tuple[dict, Path]:
    """The runner's environment with a temporary folder of its own (TMPDIR), to see what a run leaves there."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return dict(os.environ, TMPDIR=str(tmp)), tmp


def leftovers(tmp: Path) -> list[str]:
    """What a run left in its temporary folder, but torch's compile cache (torchinductor_<user>, which ComfyUI's
    torch creates there and keeps for later runs on purpose)."""
    return sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_"))


def started_port(stderr: str) -> int:
    """The port of the ComfyUI the runner says it starts."""
    (port,) = re.findall(r"starting ComfyUI from .* on 127\.0\.0\.1:(\d+)", stderr)
    return int(port)


def comfyui_pids(port: int) -> list[int]:
    """The processes running ComfyUI's main.py with ``port`` on their command line (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if b"main.py" in args and str(port).encode() in args:
                pids.append(int(cmdline.parent.name))
    return pids


def test_starts_comfyui_itself_and_saves_the_image(comfyui_path, test_checkpoint, tmp_path):
    """No server at --server, a checkout given: the runner starts it (pack linked in, test checkpoint through
    --extra-model-paths-config) on the device torch offers — the CPU here, with --cpu, since ComfyUI without it
    fails at import on a CPU-only torch — shows per-node bars with the sampler's steps, saves the PNG, stops it
    and leaves nothing in the temporary folder."""
    env, tmp = temp_env(tmp_path)
    done = run_workflow(PANORAMA, "--server", f"127.0.0.1:{comfy_server.free_port()}", "--comfyui", comfyui_path,
                        "--smoke", *SMALL, "--out", "outs", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "starting ComfyUI from" in done.stderr and "ComfyUI is up" in done.stderr
    # The device: what the runner decided agrees with what the started server reports (/system_stats).
    (device,) = re.findall(r"ComfyUI at 127\.0\.0\.1:\d+ runs on: (.+)", done.stderr)
    if "no CUDA, ROCm, MPS, XPU, NPU or MLU device found by torch: ComfyUI runs on the CPU (--cpu" in done.stderr:
        assert device == "cpu", done.stderr
    else:
        assert "ComfyUI runs on the accelerator torch finds" in done.stderr and device != "cpu", done.stderr
    assert re.search(r"#6 KSampler: +100%\|.*\| 2/2", done.stderr), done.stderr  # the sampler's step bar
    assert "#2 Vista Tiled Diffusion" in done.stderr
    (saved,) = done.stdout.split()
    path = tmp_path / saved
    assert path.parent == tmp_path / "outs" and path.suffix == ".png"
    with Image.open(path) as image:
        assert image.size == (192, 128)
    assert leftovers(tmp) == [], "a successful run leaves nothing: the temporary folder and the server log are removed"


def test_a_failed_started_run_keeps_one_log_and_gives_the_right_advice(comfyui_path, test_checkpoint, tmp_path):
    """The workflow's own checkpoint, absent from the started ComfyUI: the advice names the checkout's model folder
    (not the runner's temporary output folder ComfyUI also lists), says to run again (every run starts a fresh
    ComfyUI: no restart to do); the failed run keeps its server log as one file, vista-comfyui-last.log."""
    env, tmp = temp_env(tmp_path)
    link = comfyui_path / "custom_nodes" / "vista"
    linked_before = link.is_symlink()
    done = run_workflow(PANORAMA, "--server", f"127.0.0.1:{comfy_server.free_port()}", "--comfyui", comfyui_path,
                        cwd=tmp_path, env=env)
    message = assert_one_error(done, 4)
    assert "'v1-5-pruned-emaonly.safetensors' is not in ComfyUI's checkpoints folder" in message
    assert f"put the file into {comfyui_path / 'models' / 'checkpoints'} and run again" in message, message
    assert str(tmp) not in message and "restart" not in message, message  # no folder of the runner's, no restart
    assert leftovers(tmp) == ["vista-comfyui-last.log"]
    assert "To see the GUI go to" in (tmp / "vista-comfyui-last.log").read_text(), "it is the server's log"
    assert f"the started ComfyUI's log is kept: {tmp / 'vista-comfyui-last.log'}" in done.stderr
    assert link.is_symlink() == linked_before, "the custom_nodes/vista link is removed (unless it was there before)"


def test_sigterm_cleans_up_like_ctrl_c(comfyui_path, test_checkpoint, tmp_path):
    """SIGTERM (``timeout``, a CI cancel, ``kill``) while the started ComfyUI samples: the runner exits 143 with
    one line, the server process is gone, the custom_nodes/vista link and the temporary folder are removed."""
    env, tmp = temp_env(tmp_path)
    link = comfyui_path / "custom_nodes" / "vista"
    linked_before = link.is_symlink()
    cmd = [sys.executable, str(RUNNER), str(PANORAMA), "--server", f"127.0.0.1:{comfy_server.free_port()}",
           "--comfyui", str(comfyui_path), "--smoke", *SLOW]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    try:
        lines = []
        for line in proc.stderr:  # wait until the prompt is queued
            lines.append(line)
            if "starting ComfyUI from" in line:
                port = started_port(line)
            if "queued prompt" in line:
                break
        assert port is not None and "queued prompt" in lines[-1], "".join(lines)
        time.sleep(3.0)
        (pid,) = comfyui_pids(port)
        assert comfy_server_answers(port), "the started ComfyUI is up and sampling"
        proc.send_signal(signal.SIGTERM)
        stderr = "".join(lines) + proc.stderr.read()
        code = proc.wait(timeout=120)
        time.sleep(1.0)
        left = [what for what, there in (
            ("the ComfyUI process", pid in comfyui_pids(port)),
            ("the custom_nodes/vista link", link.is_symlink() and not linked_before),
            (f"files in the temporary folder: {leftovers(tmp)}", leftovers(tmp) != []),
        ) if there]
        assert not left, f"after SIGTERM (exit {code}) the runner left {left}"
        assert code == 143, stderr
        assert "Traceback" not in stderr and "terminated (SIGTERM)" in stderr, stderr
    finally:  # whatever failed above, leave no runner and no server behind
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        proc.stderr.close()
        for pid in comfyui_pids(port) if port is not None else []:
            os.kill(pid, signal.SIGKILL)
        if link.is_symlink() and not linked_before and link.resolve() == comfy_server.REPO_ROOT:
            link.unlink()


def comfy_server_answers(port: int) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://127.0.0.1:{port}/system_stats", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_api_format_on_a_running_server(comfyui_server, tmp_path):
    """An API-format prompt (as the frontend's Export (API) writes it) runs as it is; the output is fetched
    through /view, and a second run does not overwrite the first run's file."""
    ui = json.loads(PANORAMA.read_text())
    prompt = comfy_server.ui_to_api(ui, comfyui_server.object_info())
    api = tmp_path / "panorama_api.json"
    api.write_text(json.dumps(prompt))
    small = ["--set", "5.width=128", "--set", "5.height=128", "--set", "6.steps=1",
             "--set", "2.window_width=128", "--set", "2.window_height=128"]
    first = run_workflow(api, *on(comfyui_server), *small, "--set", "6.seed=1", cwd=tmp_path)
    second = run_workflow(api, *on(comfyui_server), *small, "--set", "6.seed=2", cwd=tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    paths = [tmp_path / p for p in first.stdout.split() + second.stdout.split()]
    assert len(set(paths)) == 2 and all(p.parent == tmp_path / "vista_outputs" for p in paths), paths
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (128, 128)


def test_missing_checkpoint(comfyui_server, comfyui_path, tmp_path):
    """The workflow's own ckpt_name, which the server lacks: node, input, file and the folders ComfyUI searches;
    a running ComfyUI lists a new model file without a restart, so the advice is to add it and run again."""
    done = run_workflow(PANORAMA, *on(comfyui_server), cwd=tmp_path)
    message = assert_one_error(done, 4)
    assert "node 1 'Load Checkpoint' (CheckpointLoaderSimple), input ckpt_name" in message
    assert "'v1-5-pruned-emaonly.safetensors' is not in ComfyUI's checkpoints folder" in message
    assert str(comfyui_path / "models" / "checkpoints") in message
    assert "(ComfyUI lists new model files without a restart) and run again" in message
    assert "restart ComfyUI" not in message
    assert comfy_server.CHECKPOINT in message  # what the server has
    assert "--smoke" in message


def test_missing_node_type(comfyui_server, tmp_path):
    ui = json.loads(PANORAMA.read_text())
    (node,) = [n for n in ui["nodes"] if n["type"] == "VistaTiledDiffusion"]
    node["type"] = "VistaNoSuchNode"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(ui))
    message = assert_one_error(run_workflow(broken, *on(comfyui_server), "--smoke", cwd=tmp_path), 4)
    assert f"node {node['id']} 'VistaNoSuchNode': VistaNoSuchNode — a Vista node: update this pack" in message
    assert "Install or update the custom node pack" in message


def test_validation_failure(comfyui_server, tmp_path):
    """/prompt's 400: a stride outside its range (Vista's validate_inputs) and a value below a schema minimum,
    each with node id, title, class and the message; the relation check is reported once, not per input."""
    done = run_workflow(PANORAMA, *on(comfyui_server), "--smoke", *SMALL, "--set", "VistaTiledDiffusion.stride_x=0",
                        "--set", "KSampler.steps=0", cwd=tmp_path)
    message = assert_one_error(done, 5)
    assert "ComfyUI rejected the workflow" in message
    assert message.count("node 2 'Vista Tiled Diffusion' (VistaTiledDiffusion): ") == 1, message
    assert "stride_x=0 px must be in [8, 16384] px" in message
    assert "node 6 'KSampler' (KSampler), input steps: Value 0 smaller than min of 1" in message


def test_non_number_in_a_window_input(comfyui_server, tmp_path):
    """Issue [H] 6: a window input that is not a number gets ComfyUI's own conversion message on that input, not
    a comparison error from Vista's validate_inputs attached to the model input."""
    done = run_workflow(PANORAMA, *on(comfyui_server), "--smoke", *SMALL, "--set", "VistaTiledDiffusion.window_width=wide",
                        cwd=tmp_path)
    message = assert_one_error(done, 5)
    assert ("node 2 'Vista Tiled Diffusion' (VistaTiledDiffusion), input window_width: Failed to convert an input "
            "value to a INT value: window_width, wide") in message, message
    assert "not supported between" not in message, message


def test_execution_error(comfyui_server, tmp_path):
    """Accepted at /prompt (step=8 is only a UI hint), fails while running: the node and the exception message."""
    done = run_workflow(PANORAMA, *on(comfyui_server), "--smoke", *SMALL, "--set", "EmptyLatentImage.width=128",
                        "--set", "EmptyLatentImage.height=128", "--set", "VistaTiledDiffusion.window_width=132",
                        cwd=tmp_path)
    message = assert_one_error(done, 6)
    assert re.search(r"execution failed in node (2 'Vista Tiled Diffusion'|6 'KSampler') .*: ValueError: ", message)
    assert "window_width" in message


def wait_for_empty_queue(server, timeout: float = 120.0) -> None:
    """The cancelled prompt is neither running nor pending any more (it was interrupted, not left to run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = server.get("/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        time.sleep(0.5)
    pytest.fail(f"the prompt still runs {timeout:.0f} s after the runner cancelled it: {queue}")


def test_timeout_interrupts_the_run(comfyui_server, tmp_path):
    done = run_workflow(PANORAMA, *on(comfyui_server), "--smoke", *SLOW, "--timeout", "3", cwd=tmp_path)
    message = assert_one_error(done, 7)
    assert "did not finish within 3 s (--timeout); it was interrupted" in message
    wait_for_empty_queue(comfyui_server)


def test_ctrl_c_cancels_the_prompt(comfyui_server, tmp_path):
    """SIGINT (a terminal's Ctrl-C). The runner starts with SIGINT at its default action, as from a terminal: a
    background job of a non-interactive shell (CI's shards) inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler."""
    cmd = [sys.executable, str(RUNNER), str(PANORAMA), *on(comfyui_server), "--smoke", *SLOW]
    with subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        for line in proc.stderr:  # wait until the prompt is queued
            if "queued prompt" in line:
                break
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, stderr
    assert "Traceback" not in stderr and "interrupted (Ctrl-C); the prompt was cancelled" in stderr, stderr
    wait_for_empty_queue(comfyui_server)


def test_vista_warnings_are_printed(comfyui_server, tmp_path):
    """A window wider than the canvas is clamped with a warning (nodes/notify.py sends it as a vista.warning
    websocket message): the runner prints it while the run goes on and lists it again at the end."""
    done = run_workflow(PANORAMA, *on(comfyui_server), "--smoke", *SMALL, "--set", "VistaTiledDiffusion.window_width=256",
                        cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warning = "Vista Tiled Diffusion: window_width=256 px is larger than the image/area width 192 px"
    assert f"run_workflow: warning: {warning}" in done.stderr, done.stderr
    assert "1 warning(s) from the Vista nodes during the run:" in done.stderr, done.stderr


def test_progress_keeps_one_scale(comfyui_server, tmp_path):
    """Vista Tiled Diffusion moves the bar per window batch on the sampler's scale times the batches (here 2 windows
    of batch 1: 4 per 2 steps) while the sampler reports steps (of 2): the KSampler bar shows one total throughout."""
    done = run_workflow(PANORAMA, *on(comfyui_server), "--smoke", *SMALL,
                        "--set", "VistaTiledDiffusion.window_batch_size=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    counts = re.findall(r"#6 KSampler: +\d+%\|[^|\r\n]*\| (\d+)/(\d+)", done.stderr)
    assert counts[0] == ("0", "1"), counts  # the bar as the node starts, before any report
    counts = counts[1:]
    assert len(counts) >= 3, done.stderr  # window batch reports and step reports were both drawn
    assert len({total for _, total in counts}) == 1, counts
    assert counts[-1][0] == counts[-1][1], counts  # ends full


def test_misspelt_set_fails_before_starting_comfyui(comfyui_path, tmp_path):
    """--set names the workflow file can check (nodes; inputs of the Vista nodes and the stock samplers, latents
    and loaders) fail in seconds, before a ComfyUI is started (which takes a minute or more)."""
    free = ["--server", f"127.0.0.1:{comfy_server.free_port()}", "--comfyui", comfyui_path]
    cases = {"KSampler.step=4": "node 6 'KSampler' (KSampler) has no input 'step'; its inputs: seed, steps, cfg",
             "VistaTiledDiffusion.window_wdith=256": "(VistaTiledDiffusion) has no input 'window_wdith'",
             "KSampler 2.steps=4": "no node has the id, title or class type 'KSampler 2'",
             "CLIPTextEncode.text=x": "'CLIPTextEncode' matches 2 nodes"}
    for text, expected in cases.items():
        start = time.monotonic()
        done = run_workflow(PANORAMA, *free, "--set", "KSampler.steps=2", "--set", text, cwd=tmp_path)
        message = assert_one_error(done, 2)
        assert expected in message, message
        assert "starting ComfyUI from" not in done.stderr and time.monotonic() - start < 30, done.stderr


def test_help_lists_every_exit_code():
    done = subprocess.run([sys.executable, str(RUNNER), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for code in ("1 workflow", "2 arguments", "3 server", "4 missing model/node", "5 validation", "6 execution",
                 "7 timeout", "130 Ctrl-C", "143 SIGTERM"):
        assert code in text, (code, done.stdout)


def test_set_names_one_node_and_an_existing_input(comfyui_server, tmp_path):
    ambiguous = assert_one_error(run_workflow(PANORAMA, *on(comfyui_server), "--set", "CLIPTextEncode.text=x",
                                              cwd=tmp_path), 2)
    assert "'CLIPTextEncode' matches 2 nodes" in ambiguous
    assert "node 3 'Positive prompt' (CLIPTextEncode)" in ambiguous and "node 4 'Negative prompt'" in ambiguous
    unknown = assert_one_error(run_workflow(PANORAMA, *on(comfyui_server), "--set", "Positive prompt.txt=x",
                                            cwd=tmp_path), 2)
    assert "node 3 'Positive prompt' (CLIPTextEncode) has no input 'txt'; its inputs: text, clip" in unknown
    syntax = assert_one_error(run_workflow(PANORAMA, *on(comfyui_server), "--set", "steps=4", cwd=tmp_path), 2)
    assert "expected NODE.INPUT=VALUE" in syntax


def test_no_server_and_no_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    done = run_workflow(PANORAMA, "--server", f"127.0.0.1:{comfy_server.free_port()}", cwd=tmp_path, env=env)
    message = assert_one_error(done, 3)
    assert "no ComfyUI answers at http://127.0.0.1:" in message and "--comfyui PATH or COMFYUI_PATH" in message


def test_bypassed_and_muted_nodes_follow_the_frontend(comfyui_server):
    """A bypassed node is dropped and its output link rewired to its input of the same type; a muted source
    leaves the input unset (the frontend sends no link)."""
    def n(id, type, inputs=(), outputs=(), widgets=(), mode=0):
        return {"id": id, "type": type, "mode": mode, "widgets_values": list(widgets),
                "inputs": [{"name": name, "type": t, "link": link} for name, t, link in inputs],
                "outputs": [{"name": t, "type": t} for t in outputs]}

    ui = {"nodes": [
        n(1, "CheckpointLoaderSimple", outputs=["MODEL", "CLIP", "VAE"], widgets=["x.safetensors"]),
        n(2, "VistaTiledDiffusion", inputs=[("model", "MODEL", 1)], outputs=["MODEL"],
          widgets=[512, 512, 128, 128, "uniform", False, 4], mode=4),
        n(3, "KSampler", inputs=[("model", "MODEL", 2), ("latent_image", "LATENT", 3)],
          widgets=[1, "fixed", 4, 7.5, "euler", "normal", 1.0]),
        n(4, "EmptyLatentImage", outputs=["LATENT"], widgets=[512, 512, 1], mode=2),
    ], "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 4, 0, 3, 3, "LATENT"]]}
    api = comfy_api_format.ui_to_api(ui, comfyui_server.object_info())
    assert sorted(api) == ["1", "3"]
    assert api["3"]["inputs"]["model"] == ["1", 0]
    assert "latent_image" not in api["3"]["inputs"]
    assert api["1"]["inputs"] == {"ckpt_name": "x.safetensors"}  # the tools converter never swaps checkpoints
