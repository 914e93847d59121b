"""Loss-curve plots (PNG) for one or several training runs on one figure.

matplotlib is imported lazily and drawn on its non-interactive Agg canvas (no pyplot, no
global backend switch), so importing ``geomkfac.nn`` never needs a display or matplotlib.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from geomkfac.errors import ConfigurationError

__all__ = ["plot_loss_curves"]


def _column(records: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(step, value) pairs of the records that have a finite ``key``."""
    steps, values = [], []
    for r in records:
        v = r.get(key)
        if v is None or v == "":
            continue
        v = float(v)
        if np.isfinite(v):
            steps.append(float(r["step"]))
            values.append(v)
    return np.asarray(steps), np.asarray(values)


def plot_loss_curves(runs: Mapping[str, Sequence[Mapping]], path, title: str | None = None,
                     log_scale: bool = True) -> str:
    """Plot training-loss curves of several runs on one figure and save it as a PNG.

    Parameters
    ----------
    runs : mapping name -> list of metric records
        Each record is a mapping with at least ``"step"`` and ``"loss"`` (the mini-batch
        loss before that step); records with ``"eval_loss"`` (loss on the full training
        set) are drawn as markers, and ``"seconds"`` gives a second panel against time.
    path : str or PathLike
        Where to write the PNG (its directory is created if needed).
    title : str, optional
    log_scale : bool
        Logarithmic loss axis (used only when every plotted value is positive).

    Returns
    -------
    str
        The path written.

    Examples
    --------
    >>> import tempfile, os
    >>> recs = [{"step": s, "loss": 1.0 / (s + 1), "seconds": 0.1 * s} for s in range(5)]
    >>> p = plot_loss_curves({"sgd": recs}, os.path.join(tempfile.mkdtemp(), "loss.png"))
    >>> open(p, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    if not runs:
        raise ConfigurationError("plot_loss_curves needs at least one run")
    with np.errstate(over="ignore", invalid="ignore"):  # diverged runs reach huge losses
        return _plot(runs, path, title, log_scale)


def _plot(runs, path, title, log_scale):
    # the Agg canvas directly: no pyplot, no global backend switch, no display needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    has_time = all(any("seconds" in r for r in recs) for recs in runs.values())
    fig = Figure(figsize=(11 if has_time else 6, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if has_time else 1, squeeze=False)[0]
    all_values = []
    for k, (name, recs) in enumerate(runs.items()):
        color = f"C{k % 10}"
        steps, loss = _column(recs, "loss")
        esteps, eloss = _column(recs, "eval_loss")
        all_values += [loss, eloss]
        axes[0].plot(steps, loss, color=color, lw=1.0, alpha=0.8, label=f"{name} (mini-batch)")
        if eloss.size:
            axes[0].plot(esteps, eloss, "o-", color=color, ms=3, lw=1.5,
                         label=f"{name} (full training set)")
        if has_time:
            t = {float(r["step"]): float(r["seconds"]) for r in recs if "seconds" in r}
            axes[1].plot([t.get(s, np.nan) for s in steps], loss, color=color, lw=1.0, alpha=0.8,
                         label=name)
            if eloss.size:
                axes[1].plot([t.get(s, np.nan) for s in esteps], eloss, "o-", color=color, ms=3)
    values = np.concatenate(all_values) if all_values else np.empty(0)
    positive = values.size > 0 and bool(np.all(values > 0))
    axes[0].set_xlabel("update (step)")
    if has_time:
        axes[1].set_xlabel("seconds")
    for ax in axes:
        ax.set_ylabel("training loss")
        if log_scale and positive:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
