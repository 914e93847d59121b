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

from geomkfac.errors import CheckpointError, ConfigurationError, DataError, NonFiniteError
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


def _complete_lines(path: str) -> list[str]:
    """The lines of a metrics file, each with its newline; a last line without one (torn by
    a kill in the middle of a write) is dropped."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the metrics file ({exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a metrics file (not UTF-8 text)") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    return lines


def _parse_metrics(path: str, fmt: str, lines: list[str]) -> list[tuple[str, dict]]:
    """``(line, record)`` per record line; DataError naming the line when one is damaged."""
    def bad(i, what):
        return DataError(
            f"{path}: line {i + 1} of the metrics file is damaged ({what}); delete the file "
            "or remove that line"
        )

    out = []
    if fmt == "jsonl":
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise bad(i, exc) from None
            if not isinstance(rec, dict) or isinstance(rec.get("step"), bool) \
                    or not isinstance(rec.get("step"), int):
                raise bad(i, "no integer 'step'")
            out.append((line, rec))
        return out
    if not lines:
        return out
    try:
        rows = list(csv.reader(lines))
    except csv.Error as exc:
        raise DataError(f"{path}: not a CSV metrics file ({exc})") from None
    header = rows[0]
    if "step" not in header:
        raise DataError(f"{path}: not a metrics file (no 'step' column in {header[:6]})")
    for i, (line, row) in enumerate(zip(lines[1:], rows[1:]), start=1):
        if len(row) != len(header):
            raise bad(i, f"{len(row)} fields for {len(header)} columns")
        rec = {}
        for k, v in zip(header, row):
            if v == "":
                continue
            try:
                num = float(v)
                rec[k] = int(num) if k in ("step", "epoch") else num
            except (ValueError, OverflowError):
                rec[k] = v
        if not isinstance(rec.get("step"), int):
            raise bad(i, "no integer 'step'")
        out.append((line, rec))
    return out


def read_metrics(path, fmt: str | None = None) -> list[dict]:
    """Read a metrics file written by :class:`MetricsWriter` (numbers parsed, empty cells
    dropped). A torn last line (no newline: the writer was killed mid-line) is ignored.

    Raises
    ------
    DataError
        The file cannot be read, or a complete line is damaged (naming the line).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> w = MetricsWriter(p); w.write({"step": 1, "epoch": 0, "loss": 0.5}); w.close()
    >>> read_metrics(p)
    [{'step': 1, 'epoch': 0, 'loss': 0.5}]
    >>> with open(p, "a") as fh: _ = fh.write("2,0,0.4")   # torn: no newline
    >>> read_metrics(p)
    [{'step': 1, 'epoch': 0, 'loss': 0.5}]
    """
    fmt = _format_for(path, fmt)
    path = os.fspath(path)
    return [rec for _, rec in _parse_metrics(path, fmt, _complete_lines(path))]


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
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            if resume_step is not None and os.path.exists(self.path):
                self._truncate(resume_step)
                self._fh = open(self.path, "a", newline="")
            else:
                self._fh = open(self.path, "w", newline="")
        except OSError as exc:
            raise ConfigurationError(
                f"{self.path}: cannot write the metrics file ({exc}); choose a writable path"
            ) from None

    def _truncate(self, step: int) -> None:
        """Keep the records up to ``step`` (the checkpoint's); a torn last line is dropped,
        never merged with the next record."""
        lines = _complete_lines(self.path)
        records = _parse_metrics(self.path, self.format, lines)
        keep = [line for line, rec in records if rec["step"] <= step]
        if self.format == "csv" and lines:
            self._columns = next(csv.reader([lines[0]]))
            keep = [lines[0]] + keep
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


def _nonneg_int(value, what: str, lo: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < lo:
        kind = "a non-negative integer" if lo == 0 else "a positive integer"
        raise ConfigurationError(f"{what} must be {kind}, got {value!r}")
    return int(value)


def _check_resume_counters(ckpt, optimizer, iterator, path: str) -> None:
    """The step counter, the data iterator and the optimizer must agree: every update draws
    one batch and advances the optimizer once."""
    if iterator.batches_taken != ckpt.step:
        raise CheckpointError(
            f"{path}: inconsistent checkpoint, step {ckpt.step} but the data iterator has drawn "
            f"{iterator.batches_taken} batches; start afresh without --resume"
        )
    saved = ckpt.extra.get("optimizer_steps")
    count = getattr(optimizer, "step_count", None)
    if saved is not None and (isinstance(saved, bool) or not isinstance(saved, int) or saved != count):
        raise CheckpointError(
            f"{path}: inconsistent checkpoint, the optimizer state counts {count} steps but "
            f"the checkpoint recorded {saved!r}; start afresh without --resume"
        )
    seconds = ckpt.extra.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds < 0:
        raise CheckpointError(f"{path}: inconsistent checkpoint, elapsed time {seconds!r}")


def _without_step_label(text: str, optimizer) -> str:
    """The optimizer's message without its own 0-based ``"step k: "`` label (the loop
    reports the 1-based update number instead, so the two counts are never mixed)."""
    label = f"step {getattr(optimizer, 'step_count', None)}: "
    return text[len(label):] if text.startswith(label) else text


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
    if not isinstance(data, Dataset):
        raise DataError(
            f"train needs a Dataset (from load_digits, load_npz, make_dataset, ...), "
            f"got {type(data).__name__}"
        )
    for what, obj, methods in (("model", model, ("get_Wbars", "set_Wbars")),
                               ("optimizer", optimizer, ("step", "state_dict", "load_state_dict"))):
        lacking = [m for m in methods if not callable(getattr(obj, m, None))]
        if lacking:
            raise ConfigurationError(
                f"the {what} lacks {', '.join(lacking)}; pass an nn.MLP and an optimizer "
                "from get_optimizer"
            )
    if (steps is None) == (epochs is None):
        raise ConfigurationError("give exactly one of steps or epochs")
    if steps is not None:
        steps = _nonneg_int(steps, "steps", 0)
    else:
        epochs = _nonneg_int(epochs, "epochs", 0)
    iterator = BatchIterator(data.num_examples, batch_size, seed)
    total = steps if steps is not None else epochs * iterator.batches_per_epoch
    if checkpoint_every is not None:
        checkpoint_every = _nonneg_int(checkpoint_every, "checkpoint_every", 1)
    if eval_every is None:
        eval_every = max(1, total // 10)
    else:
        eval_every = _nonneg_int(eval_every, "eval_every", 1)
    if not isinstance(name, str):
        raise ConfigurationError(f"the run's name must be a string, got {type(name).__name__}")
    if loss is None:
        loss = getattr(optimizer, "loss", None)
    if config is not None and not isinstance(config, dict):
        raise ConfigurationError(f"config must be a dict, got {type(config).__name__}")
    config = dict(config or {})
    ckpt_path = None
    if checkpoint_path is not None:
        try:
            ckpt_path = os.fspath(checkpoint_path)
        except TypeError:
            raise ConfigurationError(
                f"checkpoint_path must be a path, got {type(checkpoint_path).__name__}"
            ) from None

    step, elapsed = 0, 0.0
    last_ckpt, last_ckpt_step = None, None
    if resume:
        if ckpt_path is None:
            raise ConfigurationError("resume needs a checkpoint path")
        ckpt = load_checkpoint(ckpt_path)
        _check_resume_config(ckpt.config, config, ckpt_path)
        step = ckpt.restore(model, optimizer, iterator)
        _check_resume_counters(ckpt, optimizer, iterator, ckpt_path)
        elapsed = float(ckpt.extra.get("seconds", 0.0))
        last_ckpt, last_ckpt_step = ckpt_path, step

    def checkpoint():
        nonlocal last_ckpt, last_ckpt_step
        if not all(np.all(np.isfinite(W)) for W in model.get_Wbars()):
            raise NonFiniteError(
                f"the weights are not finite after update {step}; not overwriting the checkpoint"
            )
        extra = {"seconds": elapsed, "name": name}
        if isinstance(getattr(optimizer, "step_count", None), int):
            extra["optimizer_steps"] = optimizer.step_count
        save_checkpoint(ckpt_path, model, optimizer, iterator, step=step, config=config,
                        extra=extra)
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
                raise NonFiniteError(f"the loss of update {attempt} is {lval}")
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
                        f"the loss on the full training set is {rec['eval_loss']} after update {step}"
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
        message = (f"training {name!r} stopped, update {attempt} was not applied "
                   f"({_without_step_label(str(exc), optimizer)}); {where}")
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
