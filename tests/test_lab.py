"""``moondream-nb lab``: the local server, then JupyterLab with the notebooks; the connection
reaches the notebooks through the environment; stopping lab stops both."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import requests

TOKEN = "lab-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lab_serves_the_notebooks_with_the_local_server_behind_them(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "01_quickstart.ipynb").write_text(json.dumps(
        {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MOONDREAM_API_KEY", "MOONDREAM_ENDPOINT")}
    env.update(JUPYTER_TOKEN=TOKEN, JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "jrt"),
               PYTHONUNBUFFERED="1")
    lab = subprocess.Popen([sys.executable, "-m", "moondream_nb.cli", "lab", "--no-browser", "--port", str(port),
                            "--dir", str(notebooks), "--data-dir", str(tmp_path / "data")],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(lab.stdout), daemon=True).start()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/api/status", params={"token": TOKEN}, timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            raise AssertionError("JupyterLab did not answer:\n" + "".join(lines)[-3000:])
        contents = requests.get(f"{base}/api/contents", params={"token": TOKEN}, timeout=5).json()
        assert [c["name"] for c in contents["content"]] == ["01_quickstart.ipynb"]
        landing = requests.get(base, params={"token": TOKEN}, timeout=10)
        assert landing.status_code == 200 and landing.url.split("?")[0].endswith("/lab/tree/01_quickstart.ipynb")
        # The local server it started answers, and JupyterLab (so every kernel) got its endpoint.
        endpoint = re.search(r"local server at (http://127\.0\.0\.1:\d+/v1)", "".join(lines)).group(1)
        assert requests.get(endpoint[: -len("/v1")] + "/health", timeout=5).status_code == 200
        jupyter = next(p for p in _children(lab.pid))
        environ = open(f"/proc/{jupyter}/environ", "rb").read().split(b"\0")
        assert f"MOONDREAM_ENDPOINT={endpoint}".encode() in environ
        assert any(e.startswith(b"MOONDREAM_API_KEY=") for e in environ)
        assert not any("MOONDREAM_API_KEY=" in line or "md-local-" in line for line in lines)  # never printed
    finally:
        lab.send_signal(signal.SIGTERM)
        code = lab.wait(30)
    assert code == 0, "".join(lines)[-3000:]
    for _ in range(50):
        try:
            requests.get(endpoint[: -len("/v1")] + "/health", timeout=1)
        except requests.ConnectionError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the local server outlived lab")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "jupyterlab" in line]
