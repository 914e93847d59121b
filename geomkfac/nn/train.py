"""The training loop: mini-batches, optimizer steps, metrics, evaluation, checkpoints.

:func:`train` drives any optimizer with the shared step API (``step(X, Y) -> StepInfo``
with ``loss``, ``grad_norm`` and ``extras``; ``state_dict()`` / ``load_state_dict()``).
It shows a progress bar with the running loss, writes one metrics record per step (CSV or
JSONL), evaluates the loss on the full training set periodically, writes atomic
checkpoints, resumes from them bit for bit, and stops cleanly when the optimizer reports a
non-finite loss, gradient or curvature factor (:class:`~geomkfac.errors.NonFiniteError`),
keeping the last good checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from geomkfac.errors import CheckpointError, ConfigurationError, NonFiniteError
from geomkfac.nn.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from geomkfac.nn.data import BatchIterator, Dataset

__all__ = ["TrainResult", "train", "MetricsWriter", "read_metrics", "evaluate", "RESUME_FREE_KEYS"]

#: columns every metrics record has, in this order (then ``eval_loss``, then the extras)
BASE_COLUMNS = ("step", "epoch", "loss", "grad_norm", "seconds")

#: configuration keys that may change between a run and its resumption
RESUME_FREE_KEYS = frozenset({
    "steps", "epochs", "checkpoint_every", "eval_every", "progress", "out", "resume",
    "format", "optimizers",
})


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What a call to :func:`train` did.

    Attributes
    ----------
    name : str
        The run's name (e.g. the optimizer).
    status : {"completed", "non_finite"}
        ``"non_finite"``: the run stopped because a loss, gradient or factor was NaN/inf.
    steps : int
        Optimizer steps completed (counting those before a resume).
    final_loss : float or None
        Loss on the full training set after the last completed step (None without a loss,
        or when that loss is itself not finite).
    seconds : float
        Training time, cumulative over resumes (evaluation and checkpointing excluded).
    history : tuple of dict
        The metrics records of this call.
    message : str or None
        For a stopped run: what happened, at which step, and where the last good
        checkpoint is.
    checkpoint : str or None
        Path of the last checkpoint written (or resumed from), if any.
    checkpoint_step : int or None
        The step that checkpoint holds.
    """

    name: str
    status: str
    steps: int
    final_loss: float | None
    seconds: float
    history: tuple = field(repr=False)
    message: str | None = None
    checkpoint: str | None = None
    checkpoint_step: int | None = None

    @property
    def ok(self) -> bool:
        """True when the run completed."""
        return self.status == "completed"


# --------------------------------------------------------------------------- metrics files


def _format_for(path, fmt):
    if fmt is None:
        fmt = "jsonl" if os.fspath(path).endswith((".jsonl", ".json")) else "csv"
    if fmt not in ("csv", "jsonl"):
        raise ConfigurationError(f"unknown metrics format {fmt!r}; choose csv or jsonl")
    return fmt


def _to_scalar(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) or (isinstance(v, np.ndarray) and v.size == 1):
        return float(v)
    if isinstance(v, str):
        return v
    return None


def read_metrics(path, fmt: str | None = None) -> list[dict]:
    """Read a metrics file written by :class:`MetricsWriter` (numbers parsed, empty cells
    dropped).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> w = MetricsWriter(p); w.write({"step": 1, "epoch": 0, "loss": 0.5}); w.close()
    >>> read_metrics(p)
    [{'step': 1, 'epoch': 0, 'loss': 0.5}]
    """
    fmt = _format_for(path, fmt)
    with open(path, newline="") as fh:
        if fmt == "jsonl":
            return [json.loads(line) for line in fh if line.strip()]
        out = []
        for row in csv.DictReader(fh):
            rec = {}
            for k, v in row.items():
                if v in ("", None):
                    continue
                try:
                    num = float(v)
                    rec[k] = int(num) if k in ("step", "epoch") else num
                except ValueError:
                    rec[k] = v
            out.append(rec)
        return out


class MetricsWriter:
    """Append metric records to a CSV or JSONL file, one line per record, flushed at once.

    CSV columns are fixed by the first record (:data:`BASE_COLUMNS`, ``eval_loss``, then the
    optimizer's extras, sorted); keys first seen later are kept only in JSONL. With
    ``resume_step`` the existing file is kept up to that step (later rows, written after the
    checkpoint a run is resumed from, are dropped) and new records are appended.
    """

    def __init__(self, path, fmt: str | None = None, resume_step: int | None = None):
        self.path = os.fspath(path)
        self.format = _format_for(self.path, fmt)
        self._columns = None
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if resume_step is not None and os.path.exists(self.path):
            self._truncate(resume_step)
            self._fh = open(self.path, "a", newline="")
        else:
            self._fh = open(self.path, "w", newline="")

    def _truncate(self, step: int) -> None:
        with open(self.path, newline="") as fh:
            lines = fh.read().splitlines(keepends=True)
        if self.format == "csv":
            if not lines:
                return
            self._columns = next(csv.reader([lines[0]]))
            keep = [lines[0]] + [
                ln for ln, row in zip(lines[1:], csv.DictReader(lines))
                if row.get("step") and int(float(row["step"])) <= step
            ]
        else:
            keep = [ln for ln in lines if ln.strip() and int(json.loads(ln)["step"]) <= step]
        data = "".join(keep).encode()
        atomic_write(self.path, lambda fh: fh.write(data))

    def write(self, record: dict) -> None:
        """Write one record (a dict of scalars)."""
        if self.format == "jsonl":
            self._fh.write(json.dumps(record, allow_nan=True) + "\n")
        else:
            if self._columns is None:
                extras = sorted(k for k in record if k not in BASE_COLUMNS and k != "eval_loss")
                self._columns = [*BASE_COLUMNS, "eval_loss", *extras]
                self._fh.write(",".join(self._columns) + "\n")
            w = csv.writer(self._fh, lineterminator="\n")
            w.writerow(["" if record.get(c) is None else _csv_value(record[c]) for c in self._columns])
        self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _csv_value(v):
    if isinstance(v, float):
        return repr(v)  # shortest exact round trip
    return v


# --------------------------------------------------------------------------- the loop


def evaluate(model, loss, data: Dataset) -> float:
    """Mean loss of ``model`` on the whole of ``data`` (one forward pass)."""
    return float(loss.value(model.forward(data.X), data.Y))


def _check_resume_config(saved: dict, config: dict, path: str) -> None:
    diffs = []
    for key in sorted(set(saved) | set(config)):
        if key in RESUME_FREE_KEYS:
            continue
        if saved.get(key) != config.get(key):
            diffs.append(f"{key}: checkpoint {saved.get(key)!r}, now {config.get(key)!r}")
    if diffs:
        raise CheckpointError(
            f"{path}: cannot resume, the run configuration differs from the checkpoint's ("
            + "; ".join(diffs) + "); use the same settings or start afresh without --resume"
        )


def train(model, optimizer, data: Dataset, *, steps: int | None = None, epochs: int | None = None,
          batch_size: int = 100, seed: int = 0, loss=None, name: str = "run",
          eval_every: int | None = None, metrics_path=None, metrics_format: str | None = None,
          checkpoint_path=None, checkpoint_every: int | None = None, resume: bool = False,
          config: dict | None = None, progress: bool | None = None,
          raise_on_nonfinite: bool = False) -> TrainResult:
    """Train ``model`` with ``optimizer`` on ``data`` for ``steps`` updates (or ``epochs``).

    Parameters
    ----------
    model : MLP
        Updated in place by the optimizer.
    optimizer : object
        ``step(X, Y) -> StepInfo`` (``loss`` before the step, ``grad_norm``, ``extras``),
        ``state_dict()``, ``load_state_dict(d)``.
    data : Dataset
    steps, epochs : int
        Total number of updates (counted from the very start, also when resuming), or of
        passes over the data; exactly one must be given.
    batch_size, seed : int
        Mini-batches of ``batch_size`` drawn by :class:`~geomkfac.nn.data.BatchIterator`
        seeded with ``seed``.
    loss : Loss, optional
        For evaluation on the full training set; defaults to ``optimizer.loss``.
    name : str
        Label of the run (progress bar, messages).
    eval_every : int, optional
        Evaluate the full-training-set loss every this many steps (and always at the end);
        recorded as ``eval_loss``. Default: every 10 % of the run.
    metrics_path, metrics_format : optional
        Write a record per step (``step, epoch, loss, grad_norm, seconds``, ``eval_loss``
        when evaluated, and the optimizer's scalar extras) as ``"csv"`` or ``"jsonl"``
        (default from the extension, else CSV).
    checkpoint_path : optional
        Where to write atomic checkpoints: every ``checkpoint_every`` steps (if given) and at
        the end of a completed run.
    resume : bool
        Continue from the checkpoint at ``checkpoint_path`` (weights, optimizer state, data
        iterator, step counter, elapsed time); the configuration must match (except the keys
        in :data:`RESUME_FREE_KEYS`). In float64 the result equals an uninterrupted run bit
        for bit.
    config : dict, optional
        JSON-serializable description of the run, stored in checkpoints.
    progress : bool, optional
        Show a tqdm progress bar with the running loss; default: only when stderr is a TTY.
    raise_on_nonfinite : bool
        Re-raise :class:`NonFiniteError` instead of returning a stopped result.

    Returns
    -------
    TrainResult
        With ``status == "non_finite"`` and a message naming the step, the quantity and the
        last good checkpoint when the optimizer hit NaN/inf (nothing is checkpointed after
        that point).
    """
    if (steps is None) == (epochs is None):
        raise ConfigurationError("give exactly one of steps or epochs")
    iterator = BatchIterator(data.num_examples, batch_size, seed)
    total = int(steps) if steps is not None else int(epochs) * iterator.batches_per_epoch
    if total < 0:
        raise ConfigurationError(f"the number of steps must be non-negative, got {total}")
    if checkpoint_every is not None and int(checkpoint_every) < 1:
        raise ConfigurationError(f"checkpoint_every must be a positive integer, got {checkpoint_every}")
    if eval_every is None:
        eval_every = max(1, total // 10)
    elif int(eval_every) < 1:
        raise ConfigurationError(f"eval_every must be a positive integer, got {eval_every}")
    if loss is None:
        loss = getattr(optimizer, "loss", None)
    config = dict(config or {})
    ckpt_path = None if checkpoint_path is None else os.fspath(checkpoint_path)

    step, elapsed = 0, 0.0
    last_ckpt, last_ckpt_step = None, None
    if resume:
        if ckpt_path is None:
            raise ConfigurationError("resume needs a checkpoint path")
        ckpt = load_checkpoint(ckpt_path)
        _check_resume_config(ckpt.config, config, ckpt_path)
        step = ckpt.restore(model, optimizer, iterator)
        elapsed = float(ckpt.extra.get("seconds", 0.0))
        last_ckpt, last_ckpt_step = ckpt_path, step

    def checkpoint():
        nonlocal last_ckpt, last_ckpt_step
        if not all(np.all(np.isfinite(W)) for W in model.get_Wbars()):
            raise NonFiniteError(
                f"the weights are not finite after step {step}; not overwriting the checkpoint"
            )
        save_checkpoint(ckpt_path, model, optimizer, iterator, step=step, config=config,
                        extra={"seconds": elapsed, "name": name})
        last_ckpt, last_ckpt_step = ckpt_path, step

    writer = None
    if metrics_path is not None:
        writer = MetricsWriter(metrics_path, metrics_format, resume_step=step if resume else None)
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=min(step, total), desc=name, disable=not progress,
               dynamic_ncols=True, leave=True, file=sys.stderr)
    history = []
    attempt = step
    running = None
    status, message = "completed", None
    final_loss = None
    # non-finite values are detected and reported below, so NumPy's warnings add only noise
    errstate = np.errstate(over="ignore", invalid="ignore", divide="ignore")
    errstate.__enter__()
    try:
        while step < total:
            epoch = iterator.epoch
            Xb, Yb = iterator.next_batch(data)
            attempt = step + 1
            t0 = time.perf_counter()
            info = optimizer.step(Xb, Yb)
            elapsed += time.perf_counter() - t0
            lval = float(info.loss)
            if not math.isfinite(lval):  # the optimizer should have raised already
                raise NonFiniteError(f"loss is {lval} at step {attempt}")
            step = attempt
            rec = {"step": step, "epoch": epoch, "loss": lval,
                   "grad_norm": float(getattr(info, "grad_norm", float("nan"))),
                   "seconds": elapsed}
            for k, v in (getattr(info, "extras", None) or {}).items():
                v = _to_scalar(v)
                if v is not None and k not in rec:
                    rec[k] = v
            if loss is not None and (step % int(eval_every) == 0 or step == total):
                rec["eval_loss"] = evaluate(model, loss, data)
                if not math.isfinite(rec["eval_loss"]):
                    raise NonFiniteError(
                        f"loss on the full training set is {rec['eval_loss']} after step {step}"
                    )
            history.append(rec)
            if writer is not None:
                writer.write(rec)
            running = lval if running is None else 0.95 * running + 0.05 * lval
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4g}", refresh=False)
            if ckpt_path is not None and checkpoint_every and step % int(checkpoint_every) == 0:
                checkpoint()
        if ckpt_path is not None and last_ckpt_step != step:
            checkpoint()
        if loss is not None:
            final_loss = history[-1]["eval_loss"] if history and "eval_loss" in history[-1] \
                else evaluate(model, loss, data)
    except NonFiniteError as exc:
        if raise_on_nonfinite:
            raise
        status = "non_finite"
        where = (f"the last good checkpoint is {last_ckpt} (step {last_ckpt_step})"
                 if last_ckpt is not None else
                 "no checkpoint was written before (use a checkpoint interval to keep one)")
        message = f"training {name!r} stopped, update {attempt} was not applied ({exc}); {where}"
        if loss is not None:  # the failed update was not applied: the weights are the last good ones
            last = evaluate(model, loss, data)
            final_loss = last if math.isfinite(last) else None
    finally:
        errstate.__exit__(None, None, None)
        bar.close()
        if writer is not None:
            writer.close()
    return TrainResult(name=name, status=status, steps=step,
                       final_loss=final_loss, seconds=elapsed, history=tuple(history),
                       message=message, checkpoint=last_ckpt, checkpoint_step=last_ckpt_step)
