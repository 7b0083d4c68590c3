"""Every notebook in notebooks/ runs top to bottom against the embedded local server, with
``MOONDREAM_NB_AUTO=1`` standing in for the person, and fails here if any cell fails."""

from __future__ import annotations

import re
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts" / "notebooks"


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_quickstart.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_on_the_local_server(path, monkeypatch, tmp_path):
    for var in ("MOONDREAM_API_KEY", "MOONDREAM_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOONDREAM_NB_AUTO", "1")
    monkeypatch.setenv("MOONDREAM_NB_DATA_DIR", str(tmp_path / "server"))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / path.name)  # the executed notebook, outputs and all
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert not re.search(r"md-local-[A-Za-z0-9_-]{8}", text)  # the local server's key never shows
