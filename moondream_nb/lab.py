"""``moondream-nb lab``: the local server (or Moondream Cloud with a key), then JupyterLab on
loopback with the notebooks, the connection passed through the environment so the notebooks'
``moondream_nb.connect()`` finds it without editing anything."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

from .client.config import API_KEY_ENV, ENDPOINT_ENV, resolve_api_base

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"  # the repository's notebooks/ folder
QUICKSTART = "01_quickstart.ipynb"


def _interrupt(*_: object) -> None:
    # SIGTERM unwinds through `finally` like Ctrl-C does, or the server would outlive us.
    raise KeyboardInterrupt


def run_lab(port: int = 8888, open_browser: bool = True, directory: str | os.PathLike | None = None,
            data_dir: str | os.PathLike | None = None) -> int:
    """Start the server and JupyterLab; block until JupyterLab exits; stop the server. Returns the exit code."""
    root = Path(directory).expanduser() if directory else NOTEBOOKS
    if not root.is_dir():
        print(f"moondream-nb lab: no notebooks folder at {root}; pass --dir", file=sys.stderr)
        return 2
    if importlib.util.find_spec("jupyterlab") is None:
        print('moondream-nb lab: JupyterLab is not installed: pip install "moondream-nb[notebook]"', file=sys.stderr)
        return 2
    env = dict(os.environ)
    server = None
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if env.get(API_KEY_ENV):
            print(f"moondream-nb lab: using ${API_KEY_ENV} with {resolve_api_base(None)}", flush=True)
        else:
            from .local import serve
            from .local.server_process import DEFAULT_DATA_DIR

            server = serve(data_dir=data_dir or DEFAULT_DATA_DIR.expanduser())
            env[API_KEY_ENV], env[ENDPOINT_ENV] = server.api_key, server.inference_endpoint
            print(f"moondream-nb lab: local server at {server.inference_endpoint} (data in {server.data_dir})",
                  flush=True)
        cmd = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               f"--ServerApp.root_dir={root}", f"--ServerApp.open_browser={open_browser}"]
        if (root / QUICKSTART).is_file():  # the browser opens on the main job
            cmd.append(f"--LabApp.default_url=/lab/tree/{QUICKSTART}")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # containers and CI run as root; JupyterLab refuses it otherwise
        jupyter = subprocess.Popen(cmd, env=env)
        try:
            return jupyter.wait()
        except KeyboardInterrupt:
            # SIGTERM, not SIGINT: on a lone SIGINT JupyterLab waits for a y/n confirmation.
            jupyter.terminate()
            try:
                jupyter.wait(15)
            except subprocess.TimeoutExpired:
                jupyter.kill()
                jupyter.wait()
            return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.stop()
