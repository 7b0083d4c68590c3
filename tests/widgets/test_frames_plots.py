"""dataframes.py and plots.py: pandas views and matplotlib figures, imported lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

from moondream_nb import dataframes as frames, plots


def test_modules_import_without_pandas_or_matplotlib():
    code = ("import sys, moondream_nb.dataframes, moondream_nb.plots; "
            "print([m for m in ('pandas', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rollouts_frame(responses):
    df = frames.rollouts_frame(responses["detect"])
    assert len(df) == 6 and list(df["reward"]) == responses["detect"]["rewards"]
    assert list(df["n_boxes"]) == [len(r["output"]["objects"]) for r in responses["detect"]["rollouts"]]
    q = frames.rollouts_frame(responses["query"], rewards=[1, 0, 1])
    assert list(q["reward"]) == [1, 0, 1] and q["answer"].notna().all()


def test_history_frame_time_is_a_utc_datetime():
    import pandas as pd

    df = frames.history_frame([{"kind": "train_step", "step": 1, "time": 1_796_186_000.5, "kl": 0.1},
                               {"kind": "metrics", "step": 1, "time": 1_796_186_001.0, "eval": 0.5}])
    assert isinstance(df["time"].dtype, pd.DatetimeTZDtype) and str(df["time"].dt.tz) == "UTC"  # was 1.796186e+09
    assert str(df.loc[1, "time"]) == "2026-12-02 04:33:21+00:00" and df.loc[1, "eval"] == 0.5


def test_checkpoints_frame():
    df = frames.checkpoints_frame([{"step": 4, "checkpoint_id": "b", "created_at_ms": 0, "updated_at_ms": 0,
                                    "expires_at_ms": None},
                                   {"step": 2, "checkpoint_id": "a", "created_at_ms": 1000, "updated_at_ms": 1000}])
    assert list(df.index) == [2, 4] and str(df.loc[2, "created"]) == "1970-01-01 00:00:01+00:00"
    assert frames.checkpoints_frame([]).empty


def test_canvas_and_rollouts_figures(scene):
    fig = plots.canvas_figure(scene.image, [{"x": 0.5, "y": 0.5}, scene.objects[0].box_dict], title="t")
    ax = fig.axes[0]
    assert len(ax.patches) == 1 and len(ax.collections) == 1 and ax.get_title() == "t"
    fig = plots.rollouts_figure(scene.image, "point", [[{"x": 0.1, "y": 0.1}], []], [1.0, 0.0], ["#f00", "#0f0"])
    texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert texts[0].startswith("#1  reward 1.00  (1 point)") and "(0 points)" in texts[1]


def test_metrics_figure_empty():
    import pandas as pd

    fig = plots.metrics_figure(pd.DataFrame())
    assert fig.axes[0].texts[0].get_text() == "no train steps or metrics yet"


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.95])
def test_smooth_constant_stays_constant(weight):
    assert plots.smooth([2.0] * 5, weight) == pytest.approx([2.0] * 5)


def test_bands_are_clipped_to_a_metric_range_only_when_its_values_sit_inside():
    assert plots.clip_to_range("reward_mean", [0.1, 0.9], [-0.2, 1.3]) == [0.0, 1.0]
    assert plots.clip_to_range("reward_mean", [-2.0, 3.0], [-2.5, 3.5]) == [-2.5, 3.5]  # custom rewards: as they are
    assert plots.clip_to_range("eval/x", [0.1], [-1.0]) == [-1.0]


def test_a_lone_value_is_marked_with_its_value_in_the_static_figure():
    fig = plots.metrics_figure(frames.history_frame([{"kind": "metrics", "step": 3, "time": 1.0, "eval/once": 0.75}]))
    assert [t.get_text() for t in fig.axes[0].texts] == ["step 3: 0.75"]
