"""`make lab`: JupyterLab on the repository root with notebook 01 open, and its direct link printed.

Jupyter itself prints links to its file browser only (the notebook's own link is in its runtime
file), which on a remote or headless machine leaves the user to find the notebook by hand. So this
picks the port and the token itself, waits until the server answers, and prints the notebook's URL.

    python -m workbench.ui.lab [--allow-root] [--no-browser] [extra jupyter lab arguments]
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/01_fp16_nan_in_bert_attention_mask.ipynb"


def notebook_url(port: int, token: str, notebook: str = NOTEBOOK) -> str:
    return f"http://127.0.0.1:{port}/lab/tree/{notebook}?token={token}"


def lab_command(port: int, token: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={ROOT}", f"--port={port}",
            "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
            *extra, str(ROOT / NOTEBOOK)]


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    port, token = _free_port(), secrets.token_hex(24)
    process = subprocess.Popen(lab_command(port, token, extra), cwd=ROOT)
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())  # stopping this stops the server too
    try:
        if _wait_until_up(port, token, process):
            print(f"\n    Notebook 01, served from {ROOT}:\n    {notebook_url(port, token)}\n", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(port: int, token: str, process: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2):
                return True
        except OSError:
            time.sleep(0.3)
    return False


if __name__ == "__main__":
    sys.exit(main())
