"""MetricsPanel and history_frame: the client's own history, live updates, smoothing."""

from __future__ import annotations

import time

import pytest

from moondream_nb.errors import ValidationError
from moondream_nb.dataframes import history_frame
from moondream_nb.plots import smooth
from moondream_nb.widgets import MetricsPanel


def _history():
    rows = [{"kind": "train_step", "step": s, "time": float(s), "groups": 1, "rl_groups": 1, "sft_groups": 0,
             "rollouts": 4, "skills": "point", "lr": 2e-4, "applied": True, "kl": 0.01 * s, "router_kl": None,
             "grad_norm": 1.0 + s, "reward_mean": 0.2 * s, "reward_std": 0.1, "sft_loss": None} for s in (1, 2, 3)]
    rows.append({"kind": "metrics", "step": 3, "time": 4.0, "eval/reward": 0.75})
    return rows


def test_history_frame_one_row_per_step():
    frame = history_frame(_history())
    assert list(frame.index) == [1, 2, 3] and frame.index.name == "step"
    assert list(frame.columns[:6]) == ["reward_mean", "reward_std", "kl", "router_kl", "grad_norm", "sft_loss"]
    assert frame.loc[3, "eval/reward"] == 0.75 and frame.loc[3, "kl"] == pytest.approx(0.03)
    assert history_frame([]).empty and history_frame([]).index.name == "step"


def test_a_step_the_server_did_not_apply_keeps_the_applied_figures():
    skipped = dict(_history()[2], applied=False, reward_mean=0.0, kl=None, time=5.0)  # same step number
    frame = history_frame(_history() + [skipped])
    assert frame.loc[3, "reward_mean"] == pytest.approx(0.6) and frame.loc[3, "kl"] == pytest.approx(0.03)


def test_panel_series_and_validation():
    panel = MetricsPanel(_history(), live=False)
    assert set(panel.series) == {"reward_mean", "reward_std", "kl", "grad_norm", "eval/reward"}  # router_kl/sft_loss all null
    assert panel.series["eval/reward"] == [[3, 0.75]] and panel.status == "3 steps · last 3"
    assert panel.frame.equals(history_frame(_history()))
    with pytest.raises(ValidationError, match="^smoothing:"):
        panel.smoothing = 1.0
    with pytest.raises(ValidationError, match="^ft:"):
        MetricsPanel(42)


def test_live_updates_from_a_real_finetune(server, responses):
    ft = responses["ft"]
    panel = MetricsPanel(ft, interval=0.05)
    try:
        before = len(panel.frame)
        ft.log_metrics(ft.step or 0, {"eval/live": 0.5})
        deadline = time.monotonic() + 5
        while "eval/live" not in panel.series and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "eval/live" in panel.series  # picked up by the poller, no refresh() call
        assert len(panel.frame) >= max(1, before)
    finally:
        panel.close()


def test_smoothing_and_figure():
    assert smooth([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])  # bias-corrected
    assert smooth([0.0, 10.0], 0.0) == [0.0, 10.0]
    panel = MetricsPanel(_history(), live=False, smoothing=0.5)
    fig = panel.to_figure()
    assert [ax.get_title() for ax in fig.axes] == ["reward_mean", "kl", "grad_norm", "eval/reward"]
    assert panel._repr_mimebundle_()[0]["image/png"][:4] == b"\x89PNG"


def test_a_refresh_sends_only_the_new_points():
    """One new step costs the same bytes at step 2,000 as at step 10 (it resent the whole history:
    1.6 KB at 10 steps, 233 KB at 2,000); the merged series equals a panel built from scratch."""
    import json

    def row(s):
        return {"kind": "train_step", "step": s, "time": float(s), "applied": True, "kl": 0.01 * s,
                "reward_mean": 0.5, "reward_std": 0.1, "grad_norm": 1.0, "sft_loss": None, "skills": "point"}

    sizes = {}
    for n in (10, 2000):
        history = [row(s) for s in range(1, n + 1)]
        panel = MetricsPanel(history, live=False)
        sent = []
        send = panel.comm.send
        panel.comm.send = lambda data=None, **kw: (sent.append(len(json.dumps(data, default=str))), send(data=data, **kw))[1]
        history.append(row(n + 1))
        history.append({"kind": "metrics", "step": n + 1, "time": 0.0, "eval/score": 0.5})  # a new metric
        panel.refresh()
        sizes[n] = sum(sent)
        assert panel.series == MetricsPanel(history, live=False).series
        assert panel.order[-1] == "eval/score" and panel.status == f"{n + 1} steps · last {n + 1}"
    assert sizes[2000] < 1000 and sizes[2000] - sizes[10] < 50
