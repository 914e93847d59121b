"""Atomic, checksummed training checkpoints: model weights, optimizer state, data-iterator
state, step counter and run configuration in one ``.npz`` file.

A checkpoint is written to a temporary file in the same directory, flushed and
``fsync``-ed, then moved over the old one with :func:`os.replace` (atomic on POSIX and
Windows), so a run killed mid-write leaves the previous checkpoint intact. The checkpoint
it replaces is kept beside it as ``<path>.prev`` (a hard link where possible), so a
damaged file still leaves an earlier good one to resume from.

Layout of the ``.npz`` (a zip of ``.npy`` members; no pickles):

- ``model/Wbar_<i>``: the homogeneous weights ``W̄_i = [W_i b_i]`` of layer ``i``;
- ``state/<n>``: the arrays of the optimizer / iterator state trees, whose structure
  (dicts, lists, tuples, Python scalars, None) is kept in the JSON string ``__schema__``;
- ``__meta__``: JSON with the format version, step counter, number of layers and
  configuration;
- ``__checksum__``: the SHA-256 of every other member (names and raw bytes, in sorted
  order), so any change to the payload (even one ulp of one weight) is detected.

On load every entry is validated (the checksum, the format version, the JSON structure of
``__meta__`` and ``__schema__``, the weights' shapes, dtypes and finiteness, the step
counter), and any problem raises :class:`~geomkfac.errors.CheckpointError` naming the
file, and the earlier good checkpoint when there is one.

Everything is stored at full precision, so restoring a float64 run continues the same
trajectory bit for bit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geomkfac.errors import CheckpointError, GeomKFACError
from geomkfac.nn.fileformat import PARSE_ERRORS

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "atomic_write",
    "previous_path",
    "FORMAT_VERSION",
]

#: version of the checkpoint layout; bump when it changes incompatibly
#: (2: SHA-256 checksum over the payload, validated structure)
FORMAT_VERSION = 2

_CHECKSUM = "__checksum__"
_META = "__meta__"
_SCHEMA = "__schema__"
#: deepest nesting accepted in a state tree (real optimizer states are 3 levels deep)
_MAX_DEPTH = 64


def previous_path(path) -> str:
    """Where the checkpoint replaced by the last :func:`save_checkpoint` at ``path`` is kept.

    >>> previous_path("runs/checkpoint-kfac.npz")
    'runs/checkpoint-kfac.npz.prev'
    """
    return os.fspath(path) + ".prev"


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
        Number of optimizer steps taken (non-negative).
    config : dict
        The run configuration (JSON-serializable).
    extra : dict
        Any other state tree saved alongside (e.g. the loop's timing).
    path : str or None
        The file it was read from (named in errors).
    """

    Wbars: list
    optimizer_state: dict | None
    iterator_state: dict | None
    step: int
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    path: str | None = None

    def restore(self, model, optimizer=None, iterator=None) -> int:
        """Load the weights into ``model`` (and the states into ``optimizer`` / ``iterator``);
        returns the step counter.

        Nothing is modified unless everything fits: the weights' shapes are checked first,
        and the states' own ``load_state_dict`` validate them.
        """
        where = f"{self.path}: " if self.path else ""
        current = model.get_Wbars()
        if len(current) != len(self.Wbars) or any(
            a.shape != b.shape for a, b in zip(current, self.Wbars)
        ):
            raise CheckpointError(
                f"{where}checkpoint weights have shapes "
                f"{[w.shape for w in self.Wbars]} but the model has {[w.shape for w in current]}; "
                "resume with the same architecture"
            )
        dtypes = sorted({str(w.dtype) for w in self.Wbars})
        if dtypes != [str(np.dtype(model.dtype))]:
            raise CheckpointError(
                f"{where}checkpoint weights are {', '.join(dtypes)} but the model is "
                f"{np.dtype(model.dtype)}; resume with the same dtype"
            )
        if optimizer is not None and self.optimizer_state is None:
            raise CheckpointError(f"{where}checkpoint holds no optimizer state")
        if iterator is not None and self.iterator_state is None:
            raise CheckpointError(f"{where}checkpoint holds no data-iterator state")
        try:
            if optimizer is not None:
                optimizer.load_state_dict(self.optimizer_state)
            if iterator is not None:
                iterator.load_state_dict(self.iterator_state)
        except GeomKFACError as exc:  # the same kind of error, naming the file
            raise type(exc)(f"{where}{exc}") from None
        model.set_Wbars([w.copy() for w in self.Wbars])
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


class _BadSchema(Exception):
    """Internal: the ``__schema__`` tree is malformed (turned into a CheckpointError)."""


def _decode(schema, arrays, used: set, depth: int = 0) -> Any:
    """Inverse of :func:`_encode`, validating every node (``_BadSchema`` when malformed)."""
    if depth > _MAX_DEPTH:
        raise _BadSchema(f"state tree nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(schema, dict) or len(schema) not in (1, 2):
        raise _BadSchema(f"a schema node must be a one-entry object, got {str(schema)[:60]!r}")
    kind = next(iter(schema))
    value = schema[kind]
    if kind == "array":
        if set(schema) - {"array", "scalar"} or not isinstance(schema.get("scalar", False), bool):
            raise _BadSchema(f"malformed array node {str(schema)[:60]!r}")
        if not isinstance(value, str) or value not in arrays:
            raise _BadSchema(f"the schema refers to a missing array {str(value)[:60]!r}")
        if value in used:
            raise _BadSchema(f"array {value!r} is referred to twice")
        used.add(value)
        arr = arrays[value]
        if schema.get("scalar"):
            if arr.ndim != 0:
                raise _BadSchema(f"scalar {value!r} has shape {arr.shape}")
            return arr[()]
        return arr
    if len(schema) != 1:
        raise _BadSchema(f"a schema node must be a one-entry object, got {str(schema)[:60]!r}")
    if kind == "py":
        if value is not None and not isinstance(value, (bool, str)):
            raise _BadSchema(f"a 'py' node holds {type(value).__name__}")
        return value
    if kind == "int":
        if not isinstance(value, str) or len(value) > 200:
            raise _BadSchema(f"malformed integer {str(value)[:60]!r}")
        try:
            return int(value)
        except ValueError:
            raise _BadSchema(f"malformed integer {value[:60]!r}") from None
    if kind == "float":
        if not isinstance(value, str):
            raise _BadSchema(f"malformed float {str(value)[:60]!r}")
        try:
            return float.fromhex(value)
        except (ValueError, OverflowError):
            raise _BadSchema(f"malformed float {value[:60]!r}") from None
    if kind == "dict":
        if not isinstance(value, dict):
            raise _BadSchema("a 'dict' node must hold an object")
        return {k: _decode(v, arrays, used, depth + 1) for k, v in value.items()}
    if kind in ("list", "tuple"):
        if not isinstance(value, list):
            raise _BadSchema(f"a {kind!r} node must hold an array")
        items = [_decode(v, arrays, used, depth + 1) for v in value]
        return items if kind == "list" else tuple(items)
    raise _BadSchema(f"unknown entry {kind!r} in the schema")


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


def atomic_write(path, write, before_replace=None) -> None:
    """Write a file atomically: ``write(fh)`` fills a temporary file in the same directory,
    which is flushed, ``fsync``-ed and then moved over ``path`` with :func:`os.replace`
    (``before_replace()``, if given, runs just before that move).

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
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def _digest(members: dict) -> str:
    """SHA-256 over ``members`` (name -> raw bytes), the checksum member excluded."""
    h = hashlib.sha256()
    for name in sorted(members):
        if name == _CHECKSUM + ".npy":
            continue
        raw = members[name]
        enc = name.encode()
        h.update(len(enc).to_bytes(8, "little") + enc + len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def _write_npz(fh, arrays: dict) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` with a ``__checksum__`` member."""
    members = {f"{k}.npy": _npy_bytes(v) for k, v in arrays.items()}
    members[_CHECKSUM + ".npy"] = _npy_bytes(np.array(_digest(members)))
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as z:
        for name, raw in members.items():
            z.writestr(name, raw)


def _keep_previous(path: str) -> None:
    """Keep the checkpoint about to be replaced as :func:`previous_path` (atomically)."""
    if not os.path.isfile(path):
        return
    prev = previous_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(prev)}.{os.getpid()}.tmp")
    try:
        try:
            os.link(path, tmp)
        except OSError:  # no hard links here: copy
            shutil.copyfile(path, tmp)
        os.replace(tmp, prev)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # keeping the previous checkpoint is best effort; the new one is still atomic


def save_checkpoint(path, model, optimizer=None, iterator=None, step: int = 0,
                    config: dict | None = None, extra: dict | None = None,
                    keep_previous: bool = True) -> None:
    """Atomically write a checkpoint of ``model`` (and ``optimizer`` / ``iterator`` state).

    Parameters
    ----------
    path : str or PathLike
        Target ``.npz`` file; its directory is created if needed.
    model : MLP
        Anything with ``get_Wbars()``.
    optimizer, iterator : objects with ``state_dict()``, optional
    step : int
        Number of optimizer steps taken so far (non-negative).
    config : dict, optional
        JSON-serializable run configuration (checked when resuming).
    extra : dict, optional
        Any other state tree (arrays, scalars, dicts, lists).
    keep_previous : bool
        Keep the checkpoint being replaced as :func:`previous_path` (default).

    Raises
    ------
    CheckpointError
        The state cannot be stored or the file cannot be written; an existing checkpoint
        at ``path`` is then left as it was.

    Examples
    --------
    >>> import tempfile, os
    >>> from geomkfac.nn import MLP
    >>> p = os.path.join(tempfile.mkdtemp(), "c.npz")
    >>> save_checkpoint(p, MLP([2, 3, 1], seed=0), step=4)
    >>> load_checkpoint(p).step
    4
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise CheckpointError(f"the step counter must be a non-negative integer, got {step!r}")
    Wbars = [np.asarray(W) for W in model.get_Wbars()]
    arrays: dict[str, np.ndarray] = {}
    for i, Wbar in enumerate(Wbars):
        arrays[f"model/Wbar_{i}"] = Wbar
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
            "num_layers": len(Wbars),
            "config": config or {},
        }, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint configuration is not JSON-serializable: {exc}") from None
    arrays[_SCHEMA] = np.array(json.dumps(schema))
    arrays[_META] = np.array(meta)
    path = os.fspath(path)
    try:
        atomic_write(path, lambda fh: _write_npz(fh, arrays),
                     before_replace=(lambda: _keep_previous(path)) if keep_previous else None)
    except OSError as exc:
        raise CheckpointError(f"{path}: could not write checkpoint ({exc})") from None


# --------------------------------------------------------------------------- reading


def _read_members(path: str) -> dict:
    """name -> raw bytes of every member of the zip at ``path`` (PARSE_ERRORS if damaged)."""
    members = {}
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        if len(infos) > 100_000:
            raise ValueError(f"{len(infos)} members")
        for info in infos:
            if info.filename in members:
                raise ValueError(f"duplicate member {info.filename!r}")
            members[info.filename] = z.read(info)  # checks each member's CRC-32
    return members


def _parse_npy(raw: bytes) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)


def _json_member(members: dict, key: str):
    arr = _parse_npy(members[key + ".npy"])
    if arr.ndim != 0 or arr.dtype.kind != "U":
        raise ValueError(f"{key} must be a JSON string, got an array of {arr.dtype} {arr.shape}")
    return json.loads(str(arr))


def _int_entry(meta: dict, key: str, lo: int) -> int:
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"__meta__[{key!r}] must be an integer >= {lo}, got {v!r}")
    return v


def _read(path: str) -> Checkpoint:
    """Read and validate one checkpoint file (CheckpointError without the hint to .prev)."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint; run without --resume to start afresh")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not a file; give the path of a checkpoint .npz")
    try:
        members = _read_members(path)
    except PARSE_ERRORS as exc:
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if _META + ".npy" not in members or _SCHEMA + ".npy" not in members:
        raise CheckpointError(f"{path}: not a geomkfac checkpoint (no __meta__/__schema__)")
    # the format version first: another version may checksum differently
    try:
        version = _json_member(members, _META).get("format_version")
    except (*PARSE_ERRORS, AttributeError):
        version = FORMAT_VERSION  # unreadable meta: the checksum below tells
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version!r} is not supported "
            f"(this geomkfac reads and writes format {FORMAT_VERSION}); start afresh without --resume"
        )
    try:
        stored = _parse_npy(members[_CHECKSUM + ".npy"])
        stored = str(stored) if stored.ndim == 0 and stored.dtype.kind == "U" else None
    except KeyError:
        raise CheckpointError(f"{path}: corrupt checkpoint, it has no checksum") from None
    except PARSE_ERRORS:
        stored = None
    if stored != _digest(members):
        raise CheckpointError(
            f"{path}: corrupt checkpoint, its SHA-256 checksum does not match the contents "
            "(the file was damaged or edited)"
        )
    # the payload is what was written; validate its structure all the same
    try:
        meta = _json_member(members, _META)
        if not isinstance(meta, dict):
            raise ValueError(f"__meta__ must be a JSON object, got {type(meta).__name__}")
        step = _int_entry(meta, "step", 0)
        n = _int_entry(meta, "num_layers", 1)
        config = meta.get("config", {})
        if not isinstance(config, dict):
            raise ValueError(f"__meta__['config'] must be an object, got {type(config).__name__}")
        schema = _json_member(members, _SCHEMA)
        expected = {_META, _SCHEMA, _CHECKSUM, *(f"model/Wbar_{i}" for i in range(n))}
        names = {m[:-4] for m in members if m.endswith(".npy")}
        if len(names) != len(members):
            raise ValueError("a member is not a .npy array")
        missing = sorted(expected - names)
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        unknown = sorted(k for k in names - expected if not k.startswith("state/"))
        if unknown:
            raise ValueError(f"unexpected members {', '.join(unknown)}")
        Wbars = []
        for i in range(n):
            W = _parse_npy(members[f"model/Wbar_{i}.npy"])
            if W.ndim != 2 or W.dtype.kind != "f" or 0 in W.shape:
                raise ValueError(f"model/Wbar_{i} must be a non-empty 2-D float array, got {W.dtype} {W.shape}")
            if not np.all(np.isfinite(W)):
                raise ValueError(f"model/Wbar_{i} holds NaN or inf")
            Wbars.append(W)
        arrays = {k: _parse_npy(members[k + ".npy"]) for k in names if k.startswith("state/")}
        used: set = set()
        states = _decode(schema, arrays, used)
        if used != set(arrays):
            raise ValueError(f"unreferenced state arrays {sorted(set(arrays) - used)[:3]}")
        if not isinstance(states, dict) or set(states) != {"optimizer", "iterator", "extra"}:
            raise ValueError("the state tree must hold exactly optimizer, iterator and extra")
        for key in ("optimizer", "iterator", "extra"):
            if not isinstance(states[key], dict) and not (key != "extra" and states[key] is None):
                raise ValueError(f"state[{key!r}] must be a dictionary, got {type(states[key]).__name__}")
    except _BadSchema as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint, malformed __schema__ ({exc})") from None
    except PARSE_ERRORS as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from None
    return Checkpoint(
        Wbars=Wbars,
        optimizer_state=states["optimizer"],
        iterator_state=states["iterator"],
        step=step,
        config=config,
        extra=states["extra"],
        path=path,
    )


def load_checkpoint(path) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        The file is missing, truncated, corrupt, edited (checksum mismatch), from another
        format version, or not a geomkfac checkpoint. The message names the file and, when
        the earlier checkpoint kept at :func:`previous_path` is good, says so and which
        step it holds.
    """
    path = os.fspath(path)
    try:
        return _read(path)
    except CheckpointError as exc:
        prev = previous_path(path)
        hint = ""
        if os.path.isfile(prev):
            try:
                good = _read(prev)
            except CheckpointError:
                hint = f"; the earlier checkpoint {prev} is damaged too"
            else:
                hint = (f"; an earlier good checkpoint (step {good.step}) is {prev}: "
                        f"copy it to {path} to resume from there")
        raise CheckpointError(f"{exc}{hint}") from None
