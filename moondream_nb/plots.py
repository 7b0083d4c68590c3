"""Static matplotlib renderers: overlays of points/boxes, rollouts, metric curves, checkpoints.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, no
GUI backend, nothing shown twice); Jupyter displays a returned figure as PNG. matplotlib is
imported when a function is called, never at ``import moondream_nb``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _shape_type(shape: Mapping) -> str:
    return shape.get("type") or ("box" if "x_min" in shape else "point")


def draw_shapes(ax: Any, shapes: Sequence[Mapping], size: tuple[int, int], *, color: str = "#ffcc00",
                linewidth: float = 2.0, alpha: float = 1.0, linestyle: str = "-") -> None:
    """Draw normalized points/boxes on ``ax`` whose data coordinates are image pixels ``size``."""
    from matplotlib.patches import Rectangle

    w, h = size
    xs, ys, cs = [], [], []
    for shape in shapes:
        c = shape.get("color") or color
        if _shape_type(shape) == "point":
            xs.append(shape["x"] * w)
            ys.append(shape["y"] * h)
            cs.append(c)
        else:
            ax.add_patch(Rectangle((shape["x_min"] * w, shape["y_min"] * h), (shape["x_max"] - shape["x_min"]) * w,
                                   (shape["y_max"] - shape["y_min"]) * h, fill=False, edgecolor=c,
                                   linewidth=linewidth, alpha=alpha, linestyle=linestyle))
        if shape.get("label"):
            x = shape["x"] if _shape_type(shape) == "point" else shape["x_min"]
            y = shape["y"] if _shape_type(shape) == "point" else shape["y_min"]
            ax.text(x * w, y * h, f" {shape['label']}", color=c, fontsize=8, va="bottom", alpha=alpha)
    if xs:
        ax.scatter(xs, ys, s=30, c=cs, edgecolors="white", linewidths=0.8, alpha=alpha, zorder=3)


def _image_axes(ax: Any, image: Any) -> tuple[int, int]:
    from .client.image_input import to_rgb

    if hasattr(image, "getexif"):
        image = to_rgb(image)  # a PIL image: upright, 8-bit, the picture the model sees
    ax.imshow(image)
    ax.set_axis_off()
    return image.size


def canvas_figure(image: Any, shapes: Sequence[Mapping], *, title: str | None = None, width: float = 6.0) -> Any:
    """The image (a PIL image) with its shapes.

    Returns:
        A matplotlib Figure.
    """
    fig = _figure(width, width * image.height / max(1, image.width) + (0.3 if title else 0))
    ax = fig.add_subplot()
    size = _image_axes(ax, image)
    draw_shapes(ax, shapes, size)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def rollouts_figure(image: Any, skill: str, rollout_shapes: Sequence[Sequence[Mapping]], rewards: Sequence[float],
                    colors: Sequence[str], answers: Sequence[str] = (), *, title: str | None = None,
                    width: float = 9.0) -> Any:
    """Rollouts over one image, one colour each, with a legend of rewards (and answers for query).

    Args:
        image: PIL image or None (query without image).
        rollout_shapes: the shapes of each rollout.
        rewards: one per rollout; rollouts with reward <= 0 are drawn faded and dashed.
        colors: one CSS colour per rollout. answers: text per rollout (query).
    """
    from matplotlib.lines import Line2D

    n = len(rollout_shapes)
    fig = _figure(width, max(3.0, width * 0.55))
    grid = fig.add_gridspec(1, 2, width_ratios=(3, 2))
    ax = fig.add_subplot(grid[0])
    if image is not None:
        size = _image_axes(ax, image)
        for shapes, reward, color in zip(rollout_shapes, rewards, colors):
            good = reward > 0
            draw_shapes(ax, shapes, size, color=color, alpha=1.0 if good else 0.4, linestyle="-" if good else "--")
    else:
        ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    lax = fig.add_subplot(grid[1])
    lax.set_axis_off()
    handles, labels = [], []
    for i in range(n):
        text = f"#{i + 1}  reward {rewards[i]:.2f}"
        if skill in ("point", "detect"):
            count = len(rollout_shapes[i])
            text += f"  ({count} {'point' if skill == 'point' else 'box'}{'' if count == 1 else ('s' if skill == 'point' else 'es')})"
        if i < len(answers) and answers[i]:
            answer = answers[i].replace("\n", " ")
            text += f"\n     {answer[:60]}{'…' if len(answer) > 60 else ''}"
        handles.append(Line2D([0], [0], color=colors[i], lw=4))
        labels.append(text)
    lax.legend(handles, labels, loc="upper left", fontsize=8, frameon=False, handlelength=1.2)
    return fig


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard); NaNs pass through."""
    out, acc, n = [], 0.0, 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(float("nan"))
            continue
        n += 1
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight ** n) if weight > 0 else v)
    return out


def metrics_figure(frame: Any, *, smoothing: float = 0.0, columns: Sequence[str] | None = None,
                   width: float = 10.0) -> Any:
    """One small chart per numeric column of a history frame (index: step), raw and smoothed.

    ``reward_mean`` is drawn with a ±``reward_std`` band when both are present.
    """
    names = list(columns) if columns is not None else metric_columns(frame)
    fig = _figure(width, 0.4 + 2.2 * max(1, math.ceil(len(names) / 3)))
    if not names:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no train steps or metrics yet", ha="center", va="center")
        return fig
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        series = frame[name].dropna()
        steps = list(series.index)
        values = [float(v) for v in series.values]
        ax.plot(steps, values, color="C0", alpha=0.3 if smoothing > 0 else 1.0, lw=1)
        if smoothing > 0:
            ax.plot(steps, smooth(values, smoothing), color="C0", lw=1.8)
        if len(values) == 1:  # a lone value: marked, with what it is
            ax.plot(steps, values, "o", color="C0")
            ax.annotate(f"step {steps[0]}: {values[0]:.4g}", (steps[0], values[0]), textcoords="offset points",
                        xytext=(6, 6), fontsize=8)
        if name == "reward_mean" and "reward_std" in frame:
            both = frame[["reward_mean", "reward_std"]].dropna()
            mean, std = list(both["reward_mean"]), list(both["reward_std"])
            ax.fill_between(both.index, clip_to_range(name, values, [m - d for m, d in zip(mean, std)]),
                            clip_to_range(name, values, [m + d for m, d in zip(mean, std)]),
                            color="C0", alpha=0.15, lw=0)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("step", fontsize=7)
    return fig


# Ranges some metrics cannot leave (None: unbounded on that side). Charts clip a band (mean ± std)
# to the range when every value lies inside it, so a reward in [0, 1] never gets a negative band.
METRIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "reward_mean": (0.0, 1.0), "kl": (0.0, None), "grad_norm": (0.0, None), "sft_loss": (0.0, None)}


def clip_to_range(name: str, values: Sequence[float], band: Sequence[float]) -> list[float]:
    """``band`` clipped to the range of metric ``name`` when every one of ``values`` lies inside it."""
    lo, hi = METRIC_RANGES.get(name, (None, None))
    if not all((lo is None or v >= lo) and (hi is None or v <= hi) for v in values):
        return list(band)
    return [min(hi, b) if hi is not None else b for b in (max(lo, b) if lo is not None else b for b in band)]


def metric_columns(frame: Any) -> list[str]:
    """The numeric columns of a history frame worth plotting (not bookkeeping such as ``time``)."""
    skip = {"time", "groups", "rl_groups", "sft_groups", "rollouts", "lr", "applied", "reward_std"}
    out = []
    for name in frame.columns:
        if name in skip or frame[name].dtype == object:
            continue
        if frame[name].notna().any():
            out.append(name)
    return out


def checkpoints_figure(images: Sequence[Any], skill: str, labels: Sequence[str],
                       outputs: Sequence[Sequence[Sequence[Mapping]]], scores: Sequence[Sequence[float | None]],
                       answers: Sequence[Sequence[str]] = (), *, width: float = 10.0) -> Any:
    """A grid: one row per image, one column per checkpoint, each cell that checkpoint's output.

    Args:
        images: PIL images. labels: one per checkpoint (column).
        outputs: ``outputs[c][i]`` = shapes of checkpoint ``c`` on image ``i``.
        scores: ``scores[c][i]`` (or None). answers: ``answers[c][i]`` for query.
    """
    n_img, n_ck = len(images), max(1, len(labels))
    fig = _figure(width, max(2.0, width / n_ck * 0.8 * n_img))
    for i, image in enumerate(images):
        for c, label in enumerate(labels):
            ax = fig.add_subplot(n_img, n_ck, i * n_ck + c + 1)
            size = _image_axes(ax, image)
            draw_shapes(ax, outputs[c][i], size, color=f"C{c}")
            title = label if i == 0 else ""
            score = scores[c][i] if c < len(scores) and i < len(scores[c]) else None
            if score is not None:
                title = f"{title}  score {score:.2f}".strip()
            if answers and answers[c][i]:
                title = f"{title}\n{answers[c][i][:40]}".strip()
            ax.set_title(title, fontsize=8)
    return fig


def evaluation_figure(skill: str, labels: Sequence[str], colors: Sequence[str], table: Sequence[Mapping],
                      curves: Mapping[str, Sequence[float]], *, width: float = 9.0) -> Any:
    """An evaluation: precision-recall curves per model (detect; the first metric per model
    otherwise) beside the table of metrics (``table``: ``{name, digits, values}`` rows)."""
    fig = _figure(width, 3.2)
    ax, tab = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if curves:
        recall = [i / 100 for i in range(101)]
        for label, color in zip(labels, colors):
            ax.plot(recall, curves.get(label) or [0.0] * 101, color=color, label=label, linewidth=1.6)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision (IoU 0.5)")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=8, loc="lower left")
    else:
        first = table[0] if table else {"name": "", "values": []}
        ax.bar(range(len(labels)), [v or 0.0 for v in first["values"]], color=list(colors))
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel(first["name"])
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    tab.axis("off")
    cells = [[("–" if v is None else f"{v:.{row['digits']}f}") for v in row["values"]] for row in table]
    if cells:
        t = tab.table(cellText=cells, rowLabels=[row["name"] for row in table], colLabels=list(labels), loc="center")
        t.auto_set_font_size(False)
        t.set_fontsize(8)
    return fig
