"""End to end in a real browser: JupyterLab from this venv, a notebook showing the Workbench, headless Chromium.

Runs all cells, selects the root in the node inspector, applies its fix and sees the verdict turn OK,
and checks that Netron's frame draws the model with the root outlined and no consent modal. Every
request that is not to this machine is blocked and recorded. On failure, screenshots and the
JupyterLab log are kept in test-artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")  # Debian's package; `make test` installs it when missing
ARTIFACTS = ROOT / "test-artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# The notebook the test opens: the first teaching notebook, copied into a throwaway server root.
NOTEBOOK = "notebooks/01_fp16_nan_in_bert_attention_mask.ipynb"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_root(root: Path) -> None:
    """A throwaway server root shaped like the repository, so the notebook's relative paths hold."""
    root.mkdir()
    (root / "sample_models").symlink_to(ROOT / "sample_models", target_is_directory=True)
    (root / "notebooks").mkdir()
    shutil.copy(ROOT / NOTEBOOK, root / NOTEBOOK)  # a copy: the browser's autosave never touches the repository's file


def quiet_settings(settings: Path) -> None:
    """No "get notified about Jupyter news?" toast over the page."""
    folder = settings / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True)
    (folder / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))


def write_config(root: Path, port: int) -> Path:
    config = root / "jupyter_server_config.py"
    config.write_text(
        "from jupyterlab.galata import configure_jupyter_server\n"
        "configure_jupyter_server(c)\n"
        f"c.ServerApp.ip = '127.0.0.1'\nc.ServerApp.port = {port}\n"
        f"c.ServerApp.root_dir = {json.dumps(str(root))}\n"
        "c.ServerApp.allow_root = True\n"
    )
    return config


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {process.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                return
        time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout} s")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab started from this venv with Galata's settings on a free port; yields (url, log path)."""
    root = tmp_path_factory.mktemp("lab")
    prepare_root(root / "work")
    port = free_port()
    config = write_config(root / "work", port)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces")}
    quiet_settings(root / "settings")
    log = root / "jupyterlab.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "jupyterlab", f"--config={config}"], cwd=root / "work",
                                   env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def browser_page(lab, request):
    """A page whose non-loopback requests are blocked (and listed in page.blocked); screenshots kept on failure."""
    url, log = lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        blocked: list[str] = []

        def only_loopback(route):
            if urlparse(route.request.url).hostname in LOOPBACK or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", only_loopback)
        page = context.new_page()
        page.blocked = blocked
        try:
            yield page
        finally:
            failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
            if failed:
                keep_artifacts(page, log, request.node.name)
            browser.close()


def keep_artifacts(page, log: Path, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with contextlib.suppress(Exception):
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    with contextlib.suppress(Exception):
        for index, frame in enumerate(page.frames[1:]):
            frame.locator("body").screenshot(path=str(ARTIFACTS / f"{name}-frame{index}.png"))
    with contextlib.suppress(OSError):
        (ARTIFACTS / f"{name}-jupyterlab.log").write_text(log.read_text())


def test_workbench_in_jupyterlab(lab, browser_page):
    page = browser_page
    url, _ = lab
    page.goto(f"{url}/lab/tree/{NOTEBOOK}")
    expect(page.locator("#jp-main-statusbar").get_by_text("Idle")).to_be_visible(timeout=60_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    verdict = page.locator(".wb-verdict").first
    expect(verdict).to_have_text("NONFINITE", timeout=60_000)

    page.get_by_role("tab", name="Node inspector", exact=True).click()
    node_list = page.locator(".wb-node-list select").first
    softmax = next(label for label in node_list.locator("option").all_inner_texts() if label.endswith("(Softmax)"))
    node_list.select_option(label=softmax)
    expect(page.locator(".wb-node").first).to_contain_text(softmax.split()[0])
    page.get_by_role("button", name="mask_scale", exact=True).click()
    expect(page.locator(".wb-node")).to_contain_text("mask_scale")
    expect(page.locator(".wb-node")).to_contain_text("ROOT CAUSE")

    page.get_by_role("tab", name="Fixes", exact=True).click()
    page.get_by_role("button", name="Apply and re-verify", exact=True).click()
    expect(page.locator(".wb-after .wb-verdict")).to_have_text("OK", timeout=30_000)

    page.get_by_role("tab", name="Graph", exact=True).click()
    netron = page.frame_locator("iframe.wb-netron")
    expect(netron.locator('[id="node-name-mask_scale"]')).to_be_attached(timeout=30_000)
    expect(netron.locator("body")).to_have_attribute("data-workbench-focus", "selected", timeout=30_000)
    expect(netron.locator("#message-button")).to_be_hidden()  # no consent (or any other) modal

    # A click on another node in Netron selects it in the workbench: the inspector follows.
    neighbour = netron.locator('[id^="node-name-"]:not([id="node-name-mask_scale"])').first
    name = neighbour.get_attribute("id").removeprefix("node-name-")
    neighbour.click()
    page.get_by_role("tab", name="Node inspector", exact=True).click()
    expect(page.locator(".wb-node").first).to_contain_text(name, timeout=15_000)
    assert page.blocked == []
