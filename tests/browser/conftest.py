"""Browser tier fixtures: a real ComfyUI (``COMFYUI_PATH``) serving its own frontend, opened in headless Chromium.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or ``VISTA_CHROMIUM``) driven by Playwright from
PyPI; Playwright's own browser downloads are never used. A missing browser or Playwright FAILS the tier (CI
installs both); only a missing host skips it, like every host tier. Screenshots go to ``VISTA_ARTIFACTS`` (default
``tests/browser/artifacts``), one folder per host.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

import comfy_server  # noqa: E402

CHROMIUM = Path(os.environ.get("VISTA_CHROMIUM", "/usr/bin/chromium"))
VIEWPORT = {"width": 1920, "height": 1080}
READY_TIMEOUT_MS = 120_000
# Frontend settings for a test user: no first-run tutorial, no minimap over the canvas, no missing-model dialog
# (the workflows name real checkpoints the test server lacks; the tier checks missing NODE types itself).
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
}
APP_READY = ("() => !!(window.app && window.app.graph && window.app.canvas && window.LiteGraph"
             " && window.LiteGraph.registered_node_types['VistaTiledDiffusion'])")


@pytest.fixture(scope="session")
def host_path() -> Path:
    return comfy_server.comfyui_path()


@pytest.fixture(scope="session")
def artifacts(host_path) -> Path:
    root = Path(os.environ.get("VISTA_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts")
    folder = root / host_path.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")  # closed when the browser tier ends: an open page renders (CPU) all session
def browser_server(host_path, tmp_path_factory):
    """A ComfyUI server (CPU) with Vista linked in and the random-weight SD1.5 checkpoint; stopped at the end."""
    checkpoint = comfy_server.build_checkpoint(comfy_server.cache_dir(), host_path)
    timeout = float(os.environ.get("VISTA_E2E_STARTUP_TIMEOUT", "180"))
    with comfy_server.PackLink(host_path):
        server = comfy_server.ComfyServer(host_path, tmp_path_factory.mktemp("comfyui-browser"), checkpoint.parent)
        server.start(timeout=timeout)
        try:
            for key, value in SETTINGS.items():
                status, body = server.request("POST", f"/settings/{key}", value)
                assert status == 200, f"POST /settings/{key}: HTTP {status} {body}"
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")  # closed when the browser tier ends: an open page renders (CPU) all session
def chromium():
    """Headless Debian Chromium under Playwright. Missing pieces fail (CI must install them), never skip."""
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's browser (apt-get install -y chromium) or set "
                    f"VISTA_CHROMIUM; the browser tier never skips for a missing browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"Playwright is not installed in this venv ({e}): pip install playwright "
                    f"(the browser itself is Debian's chromium; never run `playwright install`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")  # closed when the browser tier ends: an open page renders (CPU) all session
def page(chromium, browser_server):
    """One page on the server's frontend, loaded once for the session; ``page.vista_errors`` collects errors
    raised by Vista's own web files (uncaught exceptions and console errors that name /extensions/vista/)."""
    context = chromium.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    errors: list[str] = []

    def on_page_error(error) -> None:
        text = f"{error}\n{getattr(error, 'stack', '') or ''}"
        if f"/extensions/{comfy_server.PACK_NAME}/" in text:
            errors.append(text)

    def on_console(message) -> None:
        if message.type == "error" and f"/extensions/{comfy_server.PACK_NAME}/" in message.text:
            errors.append(message.text)

    tab.on("pageerror", on_page_error)
    tab.on("console", on_console)
    tab.goto(browser_server.url)
    tab.wait_for_function(APP_READY, timeout=READY_TIMEOUT_MS)
    tab.vista_errors = errors
    yield tab
    context.close()
