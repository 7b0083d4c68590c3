"""Every notebook in notebooks/ runs top to bottom against the embedded local server, with
``MOONDREAM_NB_AUTO=1`` standing in for the person, and fails here if any cell fails."""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbclient
import nbformat
import pytest
import requests
from moondream_nb import connect

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts" / "notebooks"


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_quickstart.ipynb"]


def execute(nb, tmp_path, saved_as: str) -> list:
    """Run ``nb`` top to bottom in ``tmp_path``, keep it (outputs and all) in the artifacts as
    ``saved_as``, fail on any error output; return the code cells' outputs."""
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / saved_as)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return outputs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_on_the_local_server(path, monkeypatch, tmp_path):
    for var in ("MOONDREAM_API_KEY", "MOONDREAM_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOONDREAM_NB_AUTO", "1")
    monkeypatch.setenv("MOONDREAM_NB_DATA_DIR", str(tmp_path / "server"))
    outputs = execute(nbformat.read(path, as_version=4), tmp_path, path.name)
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert not re.search(r"md-local-[A-Za-z0-9_-]{8}", text)  # the local server's key never shows


@pytest.mark.parametrize("stem", ["02_labeling_sft", "03_human_in_the_loop_rl"])
def test_run_all_without_auto_mode_waits_for_the_person(stem, monkeypatch, tmp_path):
    """Run All as a person does it, with nobody standing in: no cell raises, the cells after the
    session say what to do instead of exporting or training on nothing, and the session is still
    open at the end (nothing closes it under the person)."""
    for var in ("MOONDREAM_API_KEY", "MOONDREAM_ENDPOINT", "MOONDREAM_NB_AUTO"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOONDREAM_NB_DATA_DIR", str(tmp_path / "server"))
    nb = nbformat.read(next(p for p in NOTEBOOKS if p.stem == stem), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell('print("session closed:", session.closed)'))
    outputs = execute(nb, tmp_path, f"{stem}.run_all_no_auto.ipynb")
    text = "".join(str(o.get("text", "")) for o in outputs)
    assert "session closed: False" in text
    if stem.startswith("02_"):
        assert "Nothing labelled yet" in text
        assert not (tmp_path / "labels" / "02_purple.coco.json").exists()  # no empty export


def test_quickstart_with_a_key_uses_that_endpoint_and_never_shows_the_key(monkeypatch, tmp_path):
    """The path a Moondream Cloud user takes: ``MOONDREAM_API_KEY`` + ``MOONDREAM_ENDPOINT`` set, so
    ``connect()`` starts nothing and every call goes to that endpoint with that key. A local server
    with a key of our choosing stands in for the remote endpoint (Cloud itself cannot run here)."""
    from moondream_nb.local import serve

    key = "md-remote-" + "k3y" * 8
    with serve(data_dir=tmp_path / "remote", api_key=key, threads=1) as remote:
        monkeypatch.setenv("MOONDREAM_API_KEY", key)
        monkeypatch.setenv("MOONDREAM_ENDPOINT", remote.inference_endpoint)
        monkeypatch.setenv("MOONDREAM_NB_AUTO", "1")
        monkeypatch.setenv("MOONDREAM_NB_DATA_DIR", str(tmp_path / "must-stay-empty"))
        nb = nbformat.read(NOTEBOOKS[0], as_version=4)
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
        listing = requests.get(f"{remote.endpoint}/finetunes", headers={"X-Moondream-Auth": key}, timeout=10).json()
        checkpoints = connect(server=remote).ft(name="quickstart-star", rank=8).list_checkpoints()["checkpoints"]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {})) for o in outputs)
    assert key not in text and "k3yk3y" not in text  # nor any long piece of it
    assert not (tmp_path / "must-stay-empty").exists()  # no embedded server was started
    # everything the notebook made is on that endpoint: its finetune and its saved checkpoint
    assert "quickstart-star" in [f["name"] for f in listing["finetunes"]]
    assert checkpoints and checkpoints[0]["step"] > 0


def test_human_in_the_loop_notebook_against_a_cloud_like_service(monkeypatch, tmp_path):
    """Notebook 03 as a Moondream Cloud user runs it: a train step takes 3 s, rollouts 1 s, the
    account is limited to 2 requests/s. It runs top to bottom, trains in the background, and pacing
    keeps the 429s away from the person."""
    from moondream_nb.local import serve

    key = "md-remote-" + "c10ud" * 6
    with serve(data_dir=tmp_path / "remote", api_key=key, threads=2, latency="cloud", rate_limit="2/s") as remote:
        monkeypatch.setenv("MOONDREAM_API_KEY", key)
        monkeypatch.setenv("MOONDREAM_ENDPOINT", remote.inference_endpoint)
        monkeypatch.setenv("MOONDREAM_NB_AUTO", "1")
        path = next(p for p in NOTEBOOKS if p.name.startswith("03_"))
        nb = nbformat.read(path, as_version=4)
        started = time.monotonic()
        try:
            nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                    resources={"metadata": {"path": str(tmp_path)}}).execute()
        finally:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, ARTIFACTS / "03_human_in_the_loop_rl.cloud.ipynb")
        took = time.monotonic() - started
        ft = connect(server=remote).ft(name="hitl-star", rank=8)
        steps = requests.get(f"{remote.endpoint}/finetunes/{ft.finetune_id}/steps?limit=100",
                             headers={"X-Moondream-Auth": key}, timeout=30).json()["steps"]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {})) for o in outputs)
    assert key not in text
    # 32 scenes, 4 per step: 8 steps, each applied once (in order), in about the time the service needs
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 6
    print(f"notebook 03 against the cloud-like service: {took:.0f} s, {len(steps)} steps")
