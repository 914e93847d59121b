"""Atomic training checkpoints: model weights, optimizer state, data-iterator state, step
counter and run configuration in one ``.npz`` file.

A checkpoint is written to a temporary file in the same directory, flushed and
``fsync``-ed, then moved over the old one with :func:`os.replace` (atomic on POSIX and
Windows), so a run killed mid-write leaves the previous checkpoint intact.

Layout of the ``.npz`` (no pickles; ``allow_pickle=False`` on load):

- ``model/Wbar_<i>``: the homogeneous weights ``W̄_i = [W_i b_i]`` of layer ``i``;
- ``state/<n>``: the arrays of the optimizer / iterator state trees, whose structure
  (dicts, lists, tuples, Python scalars, None) is kept in the JSON string ``__schema__``;
- ``__meta__``: JSON with the format version, step counter and configuration.

Everything is stored at full precision, so restoring a float64 run continues the same
trajectory bit for bit.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geomkfac.errors import CheckpointError

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "atomic_write", "FORMAT_VERSION"]

#: version of the checkpoint layout; bump when it changes incompatibly
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """The contents of a checkpoint file.

    Attributes
    ----------
    Wbars : list of ndarray
        ``W̄_i = [W_i b_i]`` per layer.
    optimizer_state : dict or None
        What the optimizer's ``state_dict()`` returned.
    iterator_state : dict or None
        What the data iterator's ``state_dict()`` returned.
    step : int
        Number of optimizer steps taken.
    config : dict
        The run configuration (JSON-serializable).
    extra : dict
        Any other state tree saved alongside (e.g. the loop's timing).
    """

    Wbars: list
    optimizer_state: dict | None
    iterator_state: dict | None
    step: int
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def restore(self, model, optimizer=None, iterator=None) -> int:
        """Load the weights into ``model`` (and the states into ``optimizer`` / ``iterator``);
        returns the step counter."""
        current = model.get_Wbars()
        if len(current) != len(self.Wbars) or any(
            a.shape != b.shape for a, b in zip(current, self.Wbars)
        ):
            raise CheckpointError(
                "checkpoint weights have shapes "
                f"{[w.shape for w in self.Wbars]} but the model has {[w.shape for w in current]}; "
                "resume with the same architecture"
            )
        model.set_Wbars([w.astype(model.dtype, copy=True) for w in self.Wbars])
        if optimizer is not None:
            if self.optimizer_state is None:
                raise CheckpointError("checkpoint holds no optimizer state")
            optimizer.load_state_dict(self.optimizer_state)
        if iterator is not None:
            if self.iterator_state is None:
                raise CheckpointError("checkpoint holds no data-iterator state")
            iterator.load_state_dict(self.iterator_state)
        return self.step


# --------------------------------------------------------------------------- state trees


def _encode(obj: Any, arrays: dict, where: str):
    """Turn a state tree into a JSON schema, moving arrays into ``arrays``."""
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        arr = np.asarray(obj)
        if arr.dtype.kind not in "biufcSU":
            raise CheckpointError(f"cannot store {where}: dtype {arr.dtype} is not supported")
        key = f"state/{len(arrays)}"
        arrays[key] = arr
        return {"array": key, "scalar": isinstance(obj, np.generic)}
    if obj is None or isinstance(obj, (bool, str)):
        return {"py": obj}
    if isinstance(obj, int):
        return {"int": str(obj)}  # arbitrary precision, e.g. RNG state integers
    if isinstance(obj, float):
        return {"float": obj.hex()}  # exact, including inf and nan
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise CheckpointError(f"cannot store {where}: dictionary keys must be strings")
        return {"dict": {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
        return {"tuple" if isinstance(obj, tuple) else "list": items}
    raise CheckpointError(f"cannot store {where}: unsupported type {type(obj).__name__}")


def _decode(schema, arrays) -> Any:
    if "array" in schema:
        arr = arrays[schema["array"]]
        return arr[()] if schema.get("scalar") else arr
    if "py" in schema:
        return schema["py"]
    if "int" in schema:
        return int(schema["int"])
    if "float" in schema:
        return float.fromhex(schema["float"])
    if "dict" in schema:
        return {k: _decode(v, arrays) for k, v in schema["dict"].items()}
    if "list" in schema:
        return [_decode(v, arrays) for v in schema["list"]]
    if "tuple" in schema:
        return tuple(_decode(v, arrays) for v in schema["tuple"])
    raise CheckpointError(f"unknown entry in checkpoint schema: {sorted(schema)}")


# --------------------------------------------------------------------------- atomic I/O


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write) -> None:
    """Write a file atomically: ``write(fh)`` fills a temporary file in the same directory,
    which is flushed, ``fsync``-ed and then moved over ``path`` with :func:`os.replace`.

    If ``write`` fails the temporary file is removed and ``path`` is left untouched.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "f.bin")
    >>> atomic_write(p, lambda fh: fh.write(b"abc"))
    >>> open(p, "rb").read()
    b'abc'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def save_checkpoint(path, model, optimizer=None, iterator=None, step: int = 0,
                    config: dict | None = None, extra: dict | None = None) -> None:
    """Atomically write a checkpoint of ``model`` (and ``optimizer`` / ``iterator`` state).

    Parameters
    ----------
    path : str or PathLike
        Target ``.npz`` file; its directory is created if needed.
    model : MLP
        Anything with ``get_Wbars()``.
    optimizer, iterator : objects with ``state_dict()``, optional
    step : int
        Number of optimizer steps taken so far.
    config : dict, optional
        JSON-serializable run configuration (checked when resuming).
    extra : dict, optional
        Any other state tree (arrays, scalars, dicts, lists).

    Raises
    ------
    CheckpointError
        The state cannot be stored or the file cannot be written; an existing checkpoint
        at ``path`` is then left as it was.
    """
    arrays: dict[str, np.ndarray] = {}
    for i, Wbar in enumerate(model.get_Wbars()):
        arrays[f"model/Wbar_{i}"] = np.asarray(Wbar)
    states = {
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "iterator": None if iterator is None else iterator.state_dict(),
        "extra": dict(extra or {}),
    }
    schema = _encode(states, arrays, "state")
    try:
        meta = json.dumps({
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "num_layers": len(model.get_Wbars()),
            "config": config or {},
        })
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint configuration is not JSON-serializable: {exc}") from None
    arrays["__schema__"] = np.array(json.dumps(schema))
    arrays["__meta__"] = np.array(meta)
    try:
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    except OSError as exc:
        raise CheckpointError(f"{os.fspath(path)}: could not write checkpoint ({exc})") from None


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        The file is missing, truncated, corrupt or not a geomkfac checkpoint.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint; run without --resume to start afresh")
    try:
        with np.load(path, allow_pickle=False) as d:
            files = set(d.files)
            if "__meta__" not in files or "__schema__" not in files:
                raise CheckpointError(f"{path}: not a geomkfac checkpoint (no __meta__/__schema__)")
            meta = json.loads(str(d["__meta__"]))
            schema = json.loads(str(d["__schema__"]))
            arrays = {k: d[k] for k in files if k.startswith("state/")}
            n = int(meta["num_layers"])
            Wbars = [d[f"model/Wbar_{i}"] for i in range(n)]
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format_version')} is not supported "
            f"(this geomkfac writes format {FORMAT_VERSION})"
        )
    try:
        states = _decode(schema, arrays)
    except KeyError as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint, missing array {exc}") from None
    return Checkpoint(
        Wbars=Wbars,
        optimizer_state=states["optimizer"],
        iterator_state=states["iterator"],
        step=int(meta["step"]),
        config=meta.get("config", {}),
        extra=states.get("extra") or {},
    )
