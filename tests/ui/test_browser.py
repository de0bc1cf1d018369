"""End to end in a real browser: JupyterLab from this venv, a notebook showing the Workbench, headless Chromium.

Runs all cells; hovers and clicks the error plot and sees every tab follow; picks nodes in the role-badged
node list; applies the root's fix and sees the verdict turn OK with the numbers; checks that Netron's
frame is loaded only once its tab is shown, draws the model with the root outlined and the nodes coloured
by role, keeps its page when the tab is shown again, and that a click in it selects the node; saves and
reloads the page and sees no widget error. Console errors from the workbench's own code fail the test.
Every request that is not to this machine is blocked and recorded. Screenshots of each tab, light and
dark, are kept in test-artifacts/tabs/ (the folder is printed); on failure, a screenshot of the page
and the JupyterLab log too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

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
        page.console_errors = []
        page.netron_loads = []
        page.on("console", lambda message: message.type == "error" and page.console_errors.append(
            f"{message.text} @ {message.location.get('url', '')}"))
        page.on("pageerror", lambda error: page.console_errors.append(f"page error: {error}"))
        page.on("request", lambda request: re.search(r"/m/[0-9a-f]{16}/(index\.html)?$", request.url)
                and page.netron_loads.append(request.url))
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


# Console errors that name the workbench's own code: its widgets, the page script it serves beside
# Netron, a widget that cannot be shown, and Netron laying out a graph in a hidden frame.
OWN_ERRORS = re.compile(r"workbench|wb-|anywidget|model not found|Error displaying widget|translate\(NaN", re.I)


def tab(page, name: str):
    page.get_by_role("tab", name=name, exact=True).click()


def test_workbench_in_jupyterlab(lab, browser_page):
    page = browser_page
    url, _ = lab
    page.goto(f"{url}/lab/tree/{NOTEBOOK}")
    expect(page.locator("#jp-main-statusbar").get_by_text("Idle")).to_be_visible(timeout=60_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    expect(page.locator(".wb-verdict").first).to_have_text("NONFINITE", timeout=60_000)

    check_error_plot(page)
    check_node_list(page)
    assert page.locator("iframe.wb-netron").count() == 0 and page.netron_loads == []  # Graph never shown yet
    check_fixes(page)
    check_netron(page)
    keep_tab_screenshots(page)
    check_reload(page)
    own = [error for error in page.console_errors if OWN_ERRORS.search(error)]
    print(f"{len(page.console_errors)} console errors, {len(own)} from the workbench's code")
    assert own == [], own
    assert page.blocked == []


def check_error_plot(page) -> None:
    """Hover names a node, a click selects it in every tab, a drag zooms, reset shows all again."""
    tab(page, "Error along the graph")
    victim = page.locator('.wb-plot-point[data-node="node_Softmax_98"]')
    victim.hover()
    expect(page.locator(".wb-plot-tip")).to_contain_text("node_Softmax_98")
    expect(page.locator(".wb-plot-tip")).to_contain_text(re.compile(r"non-finite elements: [1-9]\d*"))
    victim.click()
    expect(page.locator(".wb-plot-selected")).to_have_attribute("data-node", "node_Softmax_98")
    tab(page, "Node inspector")
    expect(page.locator(".wb-node").first).to_contain_text("node_Softmax_98")
    expect(page.locator(".wb-node").first).to_contain_text("VICTIM")
    tab(page, "Error along the graph")
    plot = page.locator(".wb-plot-svg")
    box = plot.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.4, steps=5)
    page.mouse.up()
    shown = page.locator(".wb-plot-point").count()
    assert 0 < shown < 99, shown  # zoomed: only the nodes in the dragged range
    page.locator(".wb-plot-reset").click()
    expect(page.locator(".wb-plot-point")).to_have_count(page.locator(".wb-plot-point").count())
    assert page.locator(".wb-plot-point").count() > shown


def check_node_list(page) -> None:
    """Roles as coloured badges; a node picked elsewhere is highlighted in the list and scrolled to."""
    tab(page, "Node inspector")
    listing = page.locator(".wb-node-list").first
    selected = listing.locator(".wb-node-row.wb-selected")
    expect(selected).to_have_attribute("data-node", "node_Softmax_98")
    expect(selected).to_be_in_viewport()
    root_badge = listing.locator('.wb-node-row[data-node="mask_scale"] .wb-badge-root')
    assert root_badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(207, 34, 46)"
    assert listing.locator(".wb-badge-victim").count() > 10
    listing.locator('.wb-node-row[data-node="mask_scale"]').click()
    expect(page.locator(".wb-node").first).to_contain_text("ROOT CAUSE")
    page.get_by_role("button", name="mask_scale", exact=True).click()
    expect(page.locator(".wb-node")).to_contain_text("mask_scale")


def check_fixes(page) -> None:
    tab(page, "Fixes")
    page.get_by_role("button", name="Apply and re-verify", exact=True).click()
    expect(page.locator(".wb-after .wb-verdict")).to_have_text("OK", timeout=30_000)
    expect(page.locator(".wb-progress")).to_be_visible()
    expect(page.locator(".wb-numbers")).to_contain_text("non-finite before")


def check_netron(page) -> None:
    """Loaded when shown; the root outlined and coloured, victims amber; the legend turns colours off;
    shown again unchanged it keeps its page; a click on a node selects it in the workbench."""
    tab(page, "Graph")
    netron = page.frame_locator("iframe.wb-netron")
    expect(netron.locator('[id="node-name-mask_scale"]')).to_be_attached(timeout=30_000)
    expect(netron.locator("body")).to_have_attribute("data-workbench-focus", "selected", timeout=30_000)
    expect(netron.locator("#message-button")).to_be_hidden()  # no consent (or any other) modal
    # Netron's page forbids eval, which Locator.evaluate needs: styles are read with to_have_css.
    header = netron.locator('[id="node-name-mask_scale"] .node-item-type path').first
    expect(header).to_have_css("fill", "rgb(207, 34, 46)")
    expect(netron.locator("#workbench-legend")).to_contain_text("root cause")
    expect(netron.locator("#workbench-legend")).to_contain_text("victim")
    netron.locator("#workbench-colours").uncheck()
    expect(header).not_to_have_css("fill", "rgb(207, 34, 46)")
    netron.locator("#workbench-colours").check()
    expect(header).to_have_css("fill", "rgb(207, 34, 46)")
    loads = len(page.netron_loads)
    assert loads == 1, page.netron_loads
    tab(page, "Overview")
    tab(page, "Graph")
    page.wait_for_timeout(300)
    assert len(page.netron_loads) == loads  # shown again unchanged: not reloaded, Netron keeps its position

    neighbour = netron.locator('[id^="node-name-"]:not([id="node-name-mask_scale"])').first
    name = neighbour.get_attribute("id").removeprefix("node-name-")
    neighbour.click()
    tab(page, "Node inspector")
    expect(page.locator(".wb-node").first).to_contain_text(name, timeout=15_000)
    expect(page.locator(".wb-node-list .wb-node-row.wb-selected")).to_have_attribute("data-node", name)
    assert len(page.netron_loads) == loads  # the click selected the node without reloading Netron
    page.locator('.wb-node-list .wb-node-row[data-node="node_Softmax_98"]').click()
    expect(page.locator(".wb-node").first).to_contain_text("node_Softmax_98")
    page.wait_for_timeout(500)
    assert len(page.netron_loads) == loads  # a new selection while the Graph tab is hidden loads nothing
    shown = page.locator("iframe.wb-netron").get_attribute("src")
    tab(page, "Graph")  # shown again: now the page around the new selection is made and loaded
    expect(page.locator("iframe.wb-netron")).not_to_have_attribute("src", shown, timeout=15_000)
    expect(netron.locator("body")).to_have_attribute("data-workbench-focus", "selected", timeout=30_000)
    assert len(page.netron_loads) == loads + 1

    # The fixed candidate: what the fix changed outlined (dashed green), the old root no longer red.
    page.get_by_role("button", name="Whole fixed candidate", exact=True).click()
    border = netron.locator('[id="node-name-mask_scale"] > .node.node-border')
    expect(border).to_have_css("stroke", "rgb(26, 127, 55)", timeout=30_000)
    expect(netron.locator('[id="node-name-mask_scale"] .node-item-type path').first).not_to_have_css(
        "fill", "rgb(207, 34, 46)")
    expect(netron.locator("#workbench-legend")).to_contain_text("changed by the fix")
    fixed = page.locator("iframe.wb-netron").get_attribute("src")
    page.get_by_role("button", name="Around the selected node", exact=True).click()
    # Let Netron finish its layout before the tab is hidden (laid out hidden, it logs translate(NaN,NaN)).
    expect(page.locator("iframe.wb-netron")).not_to_have_attribute("src", fixed, timeout=15_000)
    expect(netron.locator("body")).to_have_attribute("data-workbench-focus", "selected", timeout=30_000)


def keep_tab_screenshots(page) -> None:
    folder = ARTIFACTS / "tabs"
    folder.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 2000})  # a whole tab in one picture
    workbench = page.locator(".wb-verdict").first.locator("xpath=ancestor::div[contains(@class,'widget-tab')][1]")
    for theme in ("light", "dark"):
        name = "JupyterLab Dark" if theme == "dark" else "JupyterLab Light"
        page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{name}'}})")
        page.wait_for_timeout(500)
        for title in ("Overview", "Error along the graph", "Node inspector", "Graph", "Fixes"):
            tab(page, title)
            page.wait_for_timeout(300 if title == "Graph" else 100)
            slug = title.lower().replace(" ", "-")
            workbench.screenshot(path=str(folder / f"{theme}-{slug}.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.set_viewport_size({"width": 1400, "height": 1000})
    print(f"\nscreenshots of each tab: {folder}")


def check_reload(page) -> None:
    """Saved and reloaded: the Workbench is drawn again from the live kernel, and no widget is missing."""
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    expect(page.locator(".jp-mod-dirty")).to_have_count(0, timeout=10_000)
    page.reload()
    expect(page.locator("#jp-main-statusbar").get_by_text("Idle")).to_be_visible(timeout=60_000)
    expect(page.locator(".wb-verdict").first).to_have_text("NONFINITE", timeout=30_000)
    page.wait_for_timeout(1000)
    assert page.get_by_text("Error displaying widget").count() == 0
    assert page.get_by_text("model not found").count() == 0
