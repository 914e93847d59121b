"""Image and sequence views of the data sets, for convolutional and recurrent models.

The loaders of :mod:`geomkfac.nn.data` give flat inputs ``(N, d)``; a CNN wants images
``(N, C, H, W)`` and an RNN sequences ``(N, T, d)``:

- :func:`as_images`: square grey images ``(N, 1, s, s)`` (the 8×8 digits, 28×28 IDX images);
- :func:`as_sequences`: the same images read row by row, ``T = s`` steps of ``s`` pixels;
- :func:`next_row_task`: the sequence-to-sequence task "predict the next row": inputs rows
  ``0…s−2``, targets rows ``1…s−1`` (task ``"sequence"``, float targets ``(N, T, s)``);
- :func:`load_shaped_npz`: a user ``.npz`` with ``X`` already shaped (``(N, C, H, W)`` or
  ``(N, T, d)``) and ``Y``: labels ``(N,)`` (classification), per-step labels ``(N, T)`` or
  per-step float targets ``(N, T, C)`` (task ``"sequence"``).

>>> from geomkfac.nn.data import load_digits
>>> digits = load_digits("classification")
>>> as_images(digits).X.shape, as_sequences(digits).X.shape
((1797, 1, 8, 8), (1797, 8, 8))
>>> seq = next_row_task(digits)
>>> seq.X.shape, seq.Y.shape, seq.task
((1797, 7, 8), (1797, 7, 8), 'sequence')
"""

from __future__ import annotations

import os

import numpy as np

from geomkfac.errors import DataError
from geomkfac.nn.data import Dataset
from geomkfac.nn.fileformat import PARSE_ERRORS

__all__ = ["as_images", "as_sequences", "next_row_task", "load_shaped_npz", "SHAPED_TASKS"]

#: tasks of shaped data: "sequence" has float targets at every step
SHAPED_TASKS = ("classification", "autoencoder", "sequence")


def _side(data: Dataset) -> int:
    d = data.X.shape[1] if data.X.ndim == 2 else None
    s = int(round(np.sqrt(d))) if d else 0
    if d is None or s * s != d:
        raise DataError(
            f"{data.name}: cannot view inputs of shape {data.X.shape[1:]} as square images; "
            "save shaped inputs in an .npz (X of shape (N, C, H, W) or (N, T, d))"
        )
    return s


def as_images(data: Dataset) -> Dataset:
    """Flat square images ``(N, s²)`` as ``(N, 1, s, s)`` (rows first)."""
    if data.X.ndim == 4:
        return data
    s = _side(data)
    return Dataset(data.X.reshape(-1, 1, s, s), data.Y, data.task, data.name, data.num_classes)


def as_sequences(data: Dataset) -> Dataset:
    """Flat square images ``(N, s²)`` read row by row: ``(N, s, s)`` (step t = row t)."""
    if data.X.ndim == 3:
        return data
    s = _side(data)
    return Dataset(data.X.reshape(-1, s, s), data.Y, data.task, data.name, data.num_classes)


def next_row_task(data: Dataset) -> Dataset:
    """Predict row ``t+1`` from rows ``0…t``: inputs rows ``0…s−2``, targets rows ``1…s−1``."""
    seq = as_sequences(data).X
    return Dataset(np.ascontiguousarray(seq[:, :-1]), np.ascontiguousarray(seq[:, 1:]),
                   "sequence", f"{data.name} (next row)", None)


def load_shaped_npz(path, task: str = "classification", dtype=np.float64) -> Dataset:
    """A user ``.npz`` with shaped inputs ``X`` and targets ``Y`` (see the module docstring).

    Raises
    ------
    DataError
        Missing file or keys, non-numeric or non-finite arrays, or targets that do not fit.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such data file")
    try:
        with np.load(path, allow_pickle=False) as d:
            if "X" not in d.files:
                raise DataError(f"{path}: missing array 'X' (found: {', '.join(d.files) or 'none'})")
            X = d["X"]
            Y = d["Y"] if "Y" in d.files else None
    except DataError:
        raise
    except PARSE_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if X.dtype.kind not in "biuf" or X.ndim < 2 or X.shape[0] == 0:
        raise DataError(f"{path}: X must be a numeric array (N, ...) with N >= 1, got {X.dtype} {X.shape}")
    X = X.astype(dtype)
    if not np.all(np.isfinite(X)):
        raise DataError(f"{path}: X contains NaN or inf values")
    N = X.shape[0]
    if task == "autoencoder":
        return Dataset(X, X, task, path, None)
    if Y is None:
        raise DataError(f"{path}: task {task!r} needs targets under key 'Y'")
    if Y.shape[0] != N or Y.dtype.kind not in "biuf":
        raise DataError(f"{path}: Y must be numeric with {N} rows like X, got {Y.dtype} {Y.shape}")
    if task == "classification":
        if Y.dtype.kind == "f" and np.any(Y != np.round(Y)):
            raise DataError(f"{path}: labels Y must be integers")
        Y = Y.astype(np.int64)
        if Y.min() < 0:
            raise DataError(f"{path}: labels must be >= 0, got {Y.min()}")
        return Dataset(X, Y, task, path, int(Y.max()) + 1)
    Y = Y.astype(dtype)
    if not np.all(np.isfinite(Y)):
        raise DataError(f"{path}: Y contains NaN or inf values")
    return Dataset(X, Y, "sequence", path, None)
