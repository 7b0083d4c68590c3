"""Starting the server: ``serve()`` from Python and ``moondream-nb serve`` from a shell."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from moondream_nb.local import serve
from moondream_nb.local.server_process import KEYS_ENV, READY_PREFIX
from moondream_nb import connect

START_LIMIT_S = 10.0


def test_serve_answers_quickly_and_stops_cleanly():
    t0 = time.monotonic()
    srv = serve(threads=1)
    started = time.monotonic() - t0
    with srv:
        assert started < START_LIMIT_S, f"took {started:.1f} s to answer"
        assert srv.endpoint == f"http://127.0.0.1:{srv.port}/v1/tuning"
        assert srv.inference_endpoint == f"http://127.0.0.1:{srv.port}/v1"
        assert srv.api_key not in repr(srv)
        ft = connect(server=srv).ft(name="handle", rank=8)
        assert ft.finetune_id and srv.data_dir.is_dir()
    assert not srv.running and not srv.data_dir.exists()  # serve() made the temp dir, stop() removed it
    try:
        requests.get(srv.url + "/health", timeout=2)
        raise AssertionError("still answering after stop()")
    except requests.ConnectionError:
        pass


def _start_cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "moondream_nb.cli", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(READY_PREFIX):
            break
    return proc, lines


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KEYS_ENV}
    env["MOONDREAM_NB_THREADS"] = "1"
    return env


def test_cli_generates_and_prints_a_key_once(tmp_path):
    proc, lines = _start_cli(["--data-dir", str(tmp_path)], _env())
    try:
        text = "\n".join(lines)
        port = int(lines[-1][len(READY_PREFIX):])
        assert f"tuning endpoint:    http://127.0.0.1:{port}/v1/tuning" in text
        assert f"inference endpoint: http://127.0.0.1:{port}/v1" in text
        key = next(line.split(": ", 1)[1] for line in lines if "API key (generated" in line)
        ok = requests.get(f"http://127.0.0.1:{port}/v1/tuning/finetunes", headers={"X-Moondream-Auth": key}, timeout=10)
        assert ok.status_code == 200
        assert (tmp_path / "moondream.sqlite3").is_file()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert key not in err


def test_cli_masks_given_keys(tmp_path):
    env = _env()
    env[KEYS_ENV] = "md-local-from-the-environment-key"
    proc, lines = _start_cli(["--data-dir", str(tmp_path), "--api-key", "md-local-from-the-command-line"], env)
    try:
        text = "\n".join(lines)
        assert "from-the-environment-key" not in text and "from-the-command-line" not in text
        port = int(lines[-1][len(READY_PREFIX):])
        for key in ("md-local-from-the-environment-key", "md-local-from-the-command-line"):
            resp = requests.get(f"http://127.0.0.1:{port}/v1/tuning/finetunes", headers={"X-Moondream-Auth": key},
                                timeout=10)
            assert resp.status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
