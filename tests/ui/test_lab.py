"""`make lab`: the repository root served, notebook 01's direct link printed."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/01_fp16_nan_in_bert_attention_mask.ipynb"


def test_make_lab_runs_the_launcher():
    recipe = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "-m workbench.ui.lab" in recipe


def test_lab_prints_notebook_01s_url_and_serves_the_repository_root(tmp_path):
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    process = subprocess.Popen([sys.executable, "-m", "workbench.ui.lab", "--no-browser", "--allow-root"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = _printed_url(process, timeout=120)
        assert f"/lab/tree/{NOTEBOOK}?token=" in url
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        base, token = url.split("/lab/tree/")[0], url.split("token=")[1]
        with urllib.request.urlopen(f"{base}/api/contents/sample_models?token={token}", timeout=10) as response:
            listing = json.load(response)
        assert listing["type"] == "directory" and any(item["name"].endswith(".onnx") for item in listing["content"])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _printed_url(process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if line.strip().startswith("http://"):
            return line.strip()
        assert time.monotonic() < deadline, "no URL printed in time"
    raise AssertionError(f"the launcher exited ({process.poll()}) without printing a URL")
