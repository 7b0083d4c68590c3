"""The local server on a full, read-only or failing disk (issue 22): a 507 naming the data
directory, nothing half-applied, recovery once the disk is back; one clear line when it cannot
start; a fatal signal leaves its reason in the log. Full and read-only disks are small tmpfs
mounts, which need root: those tests are skipped (saying so) elsewhere."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from moondream_nb.local import serve

from .conftest import Api, item
from moondream_nb import connect

T = "/v1/tuning"


def _mount(path: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root; run as root to test a full or read-only disk")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    _mount(mnt, "32m")
    try:
        yield mnt
    finally:
        _umount(mnt)


def _fill(directory: Path) -> Path:
    filler = directory / "filler.bin"
    with open(filler, "wb") as f:
        chunk = b"\0" * 2**20
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _group(api: Api, fid: str, seed: int) -> dict:
    request, _ = item(seed)
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 4, "request": request})
    return {"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"], "rewards": [0.0, 0.3, 0.6, 1.0]}


def _storage_error(resp, data_dir: Path, code: str) -> None:
    assert resp.status_code == 507, (resp.status_code, resp.text[:300])
    error = resp.json()["error"]
    assert error["code"] == code and str(data_dir) in error["message"], error
    assert "Traceback" not in resp.text


def test_a_full_disk_is_a_507_naming_the_directory_and_nothing_is_half_applied(small_disk):
    with serve(data_dir=small_disk, threads=1) as srv:
        api = Api(srv.url, srv.api_key)
        fid = api.finetune("full-disk")
        body = {"finetune_id": fid, "groups": [_group(api, fid, 1)]}
        assert api.ok("POST", f"{T}/train_step", body)["step"] == 1
        filler = _fill(small_disk)

        _storage_error(api.call("POST", f"{T}/train_step", body, headers={"Idempotency-Key": "full-1"}),
                       small_disk, "insufficient_storage")
        acked = []
        for n in range(20):  # SQLite reuses its WAL, so small writes may still fit; none is a 500
            resp = api.call("POST", f"{T}/finetunes/{fid}/metrics", {"step": 1, "metrics": {f"m{n}": 1.0}})
            if resp.status_code == 200:
                acked.append(f"m{n}")
            else:
                _storage_error(resp, small_disk, "insufficient_storage")
        request, _ = item(2)  # side-effect free: answers though its key cannot be recorded
        api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 2, "request": request},
               headers={"Idempotency-Key": "full-rollouts"})
        assert api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"] == 1

        filler.unlink()  # space returns: the same call, same key, now applies once
        assert api.ok("POST", f"{T}/train_step", body, headers={"Idempotency-Key": "full-1"})["step"] == 2
        assert api.ok("POST", f"{T}/train_step", body, headers={"Idempotency-Key": "full-1"})["step"] == 2
        logged = api.ok("GET", f"{T}/finetunes/{fid}/metrics?limit=100")["metrics"]
        names = [name for row in logged for name in (row.get("metrics") or {row.get("name"): 0})]
        assert sorted(n for n in names if str(n).startswith("m")) == sorted(acked)
        assert not list(small_disk.rglob("*.tmp"))
        with sqlite3.connect(small_disk / "moondream.sqlite3") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert srv.running


def test_a_data_dir_turned_read_only_is_a_507_and_recovers(tmp_path):
    with serve(data_dir=tmp_path, threads=1) as srv:
        api = Api(srv.url, srv.api_key)
        fid = api.finetune("read-only")
        body = {"finetune_id": fid, "groups": [_group(api, fid, 3)]}
        weights = tmp_path / "finetunes"
        _mount(weights, "1m")  # the server's open files keep their disk; new weights files meet a read-only one
        try:
            _remount(weights, "ro")
            _storage_error(api.call("POST", f"{T}/train_step", body), tmp_path, "storage_unavailable")
            assert api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"] == 0
        finally:
            _umount(weights)
        assert api.ok("POST", f"{T}/train_step", body)["step"] == 1
        assert srv.running


def test_sqlite_refusing_a_write_is_a_507_naming_the_directory(tmp_path):
    from moondream_nb.local.disk import storage_problem

    path = tmp_path / "db.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("INSERT INTO t VALUES (1)")
    problem = storage_problem(caught.value, tmp_path)
    assert problem is not None and problem.status == 507 and problem.code == "storage_unavailable"
    assert str(tmp_path) in problem.message
    assert storage_problem(sqlite3.OperationalError("no such table: t"), tmp_path) is None
    assert storage_problem(PermissionError(13, "Permission denied", "/etc/passwd"), tmp_path) is None


def _serve_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moondream_nb.cli", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_starting_on_a_read_only_data_dir_is_one_line_naming_it(small_disk):
    _remount(small_disk, "ro")
    done = _serve_cli("--data-dir", str(small_disk))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(small_disk) in lines[0] and "not writable" in lines[0], done.stderr
    with pytest.raises(OSError, match="not writable"):
        serve(data_dir=small_disk)


def test_a_fatal_signal_leaves_its_reason_in_the_log(tmp_path):
    srv = serve(data_dir=tmp_path, threads=1)
    try:
        os.kill(srv.process.pid, signal.SIGBUS)  # what a WAL file vanishing under its mapping does
        srv.process.wait(30)
    finally:
        srv.stop()
    assert "Fatal Python error: Bus error" in (tmp_path / "server.log").read_text(errors="replace")


def test_a_short_key_on_a_non_loopback_host_is_refused(tmp_path):
    done = _serve_cli("--host", "0.0.0.0", "--api-key", "abcde", "--data-dir", str(tmp_path))
    assert done.returncode == 2 and "5-character API key" in done.stderr and "abcde" not in done.stderr


def test_a_non_loopback_bind_warns(tmp_path):
    with pytest.warns(UserWarning, match="reachable from other machines"):
        srv = serve(data_dir=tmp_path, host="0.0.0.0", threads=1)
    with srv:
        assert srv.running
    assert "reachable from other machines" in (tmp_path / "server.log").read_text()


def test_disk_per_finetune_is_bounded_by_its_checkpoints(tmp_path):
    """Only the latest step and each saved checkpoint keep a file (300 steps of one rank-8
    finetune once took 642 MiB); deleting a checkpoint frees its file; a restart keeps the rule."""
    from moondream_nb.scenes import make_scene

    scene = make_scene(3, size=(160, 120), n_objects=2)
    group = {"mode": "sft", "request": {"skill": "point", "image": scene.image, "object": scene.objects[0].shape},
             "target": {"points": [{"x": scene.objects[0].box_dict["x_min"], "y": scene.objects[0].box_dict["y_min"]}]}}

    def steps_on_disk() -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "data").rglob("step-*.safetensors"))

    key = "md-local-bounded-disk-test-key-0123"
    with serve(data_dir=tmp_path / "data", threads=1, api_key=key) as srv:
        ft = connect(server=srv).ft(name="bounded", rank=8)
        for k in range(1, 13):
            ft.train_step([group])
            if k in (4, 8):
                ft.save_checkpoint()
        assert steps_on_disk() == [4, 8, 12]
        ft.delete_checkpoint(4)
        assert steps_on_disk() == [8, 12]
    with serve(data_dir=tmp_path / "data", threads=1, api_key=key) as srv:
        ft = connect(server=srv).ft(finetune_id=ft.finetune_id)
        ft.train_step([group])
        assert steps_on_disk() == [8, 13]
        assert [c["step"] for c in ft.iter_checkpoints()] == [8]
