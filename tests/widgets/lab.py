"""A real JupyterLab driven by headless Chromium through Playwright, for the browser tests and
the widget benchmark.

``start_lab`` runs ``jupyter lab`` on a free 127.0.0.1 port with a random token and temporary
notebook, settings and workspace directories; ``Lab`` opens a notebook in Chromium, appends and
runs cells through JupyterLab's own commands, and executes code in the notebook's kernel to read
the kernel-side state back.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import requests

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# JupyterLab user settings: render every cell (no virtual scrolling, so cells we locate exist in
# the DOM) and no news/update toasts over the page.
_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def require_chromium() -> None:
    """Fail loudly (never skip) when the browser is missing: CI installs Debian's chromium."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing; install it with `apt-get install -y chromium` (see .ci/run)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The front ends ``start_lab`` can serve: the module to run, the app class whose
# ``expose_app_in_browser`` puts the application on ``window.jupyterapp``, and the URL prefix that
# opens a notebook.
FRONTENDS = {
    "lab": ("jupyterlab", "LabApp", "lab/tree"),
    "notebook": ("notebook", "JupyterNotebookApp", "notebooks"),  # Notebook 7 (built on JupyterLab)
}


@contextmanager
def start_lab(root: Path, timeout: float = 90.0, app: str = "lab") -> Iterator[dict]:
    """Run JupyterLab (``app="lab"``) or Notebook 7 (``app="notebook"``) in ``root`` (notebooks in
    ``root/nb``); yields ``{"url", "token", "dir", "app"}``."""
    module, app_class, _ = FRONTENDS[app]
    nb_dir, settings = root / "nb", root / "settings"
    nb_dir.mkdir(parents=True, exist_ok=True)
    for rel, value in _SETTINGS.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    token, port = secrets.token_hex(16), free_port()
    # The kernel imports the checkout under test, whatever is installed.
    repo = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(root / "ws"),
               JUPYTER_RUNTIME_DIR=str(root / "runtime"), JUPYTER_CONFIG_DIR=str(root / "config"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    log = open(root / "lab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nb_dir}",
         f"--{app_class}.expose_app_in_browser=True", *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, f"{url}/api/status?token={token}", root / "lab.log", f"jupyter {app}", timeout)
        yield {"url": url, "token": token, "dir": nb_dir, "app": app}
    finally:
        # Shut kernels down through the API first so no kernel outlives the server.
        try:
            for kernel in requests.get(f"{url}/api/kernels", params={"token": token}, timeout=5).json():
                requests.delete(f"{url}/api/kernels/{kernel['id']}", params={"token": token}, timeout=10)
        except Exception:
            pass
        stop_process(proc)
        log.close()


def wait_for_server(proc: subprocess.Popen, url: str, log_path: Path, what: str, timeout: float) -> None:
    """Poll ``url`` until it answers 2xx; raise with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log_path.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer in {timeout:g} s: {log_path.read_text()[-2000:]}")
        time.sleep(0.25)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate ``proc``, killing it after 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


_EXEC_JS = """
async (code) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  let out = "", err = "";
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === "stream") out += msg.content.text;
    else if (t === "error") err += msg.content.ename + ": " + msg.content.evalue + "\\n" + msg.content.traceback.join("\\n");
  };
  await future.done;
  return {out, err};
}
"""

_RUN_CELL_JS = """
async (source) => {
  const app = window.jupyterapp;
  const nb = app.shell.currentWidget.content;
  const n = nb.model.cells.length;
  nb.model.sharedModel.insertCell(n, {cell_type: "code", source});
  nb.activeCellIndex = n;
  nb.mode = "command";
  await app.commands.execute("notebook:run-cell");
  return n;
}
"""


class Lab:
    """One notebook open in one Chromium page."""

    def __init__(self, page: Any, server: dict) -> None:
        self.page, self.server = page, server

    def open(self, name: str, timeout: float = 120.0) -> None:
        """Open ``name`` (under the notebook dir) and wait for its kernel to be idle."""
        s = self.server
        prefix = FRONTENDS[s.get("app", "lab")][2]
        reset = "&reset" if prefix == "lab/tree" else ""  # ?reset is JupyterLab's workspace reset
        self.page.goto(f"{s['url']}/{prefix}/{name}?token={s['token']}{reset}", wait_until="domcontentloaded")
        self.page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.connectionStatus === 'connected'"
            " && w.sessionContext.session.kernel.status === 'idle'); }",
            timeout=timeout * 1000)

    def kernel(self, code: str) -> str:
        """Run ``code`` in the notebook's kernel (no cell); return its stdout; raise on error."""
        result = self.page.evaluate(_EXEC_JS, code)
        if result["err"]:
            raise AssertionError(f"kernel error:\n{result['err']}")
        return result["out"]

    def value(self, expr: str) -> Any:
        """The JSON value of a Python expression evaluated in the kernel."""
        return json.loads(self.kernel(f"import json as _j; print(_j.dumps({expr}))"))

    def run_cell(self, source: str, wait_for: str | None = ".mdnb-painted", timeout: float = 60.0) -> Any:
        """Append a code cell, run it, and return its output area locator (after ``wait_for`` shows)."""
        n = self.page.evaluate(_RUN_CELL_JS, source)
        cell = self.page.locator(".jp-Notebook .jp-Cell").nth(n)
        if wait_for:
            cell.locator(wait_for).first.wait_for(timeout=timeout * 1000)
        return cell.locator(".jp-OutputArea")

    def save(self) -> None:
        self.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
