"""Training data: the embedded digits, user ``.npz`` files, MNIST-style IDX files, and a
deterministic seeded mini-batch iterator.

Arrays are batch-major: inputs ``X`` are ``(N, d)`` floats. Targets ``Y`` depend on the task:

- ``"autoencoder"``: ``Y`` is ``X`` itself (``(N, d)`` floats in ``[0, 1]`` for the
  Bernoulli loss; any floats for squared error);
- ``"classification"``: ``Y`` holds integer labels ``(N,)`` in ``0 .. C-1`` (softmax
  cross-entropy).

Every problem with a file (missing, truncated, wrong keys, wrong shapes, labels out of
range) raises :class:`~geomkfac.errors.DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
from dataclasses import dataclass, field

import numpy as np

from geomkfac.errors import ConfigurationError, DataError
from geomkfac.nn.fileformat import PARSE_ERRORS

__all__ = [
    "TASKS",
    "Dataset",
    "BatchIterator",
    "load_digits",
    "load_npz",
    "load_idx",
    "save_idx",
    "load_idx_dataset",
    "make_dataset",
    "train_test_split",
]

#: the supported tasks
TASKS = ("autoencoder", "classification")

#: IDX dtype code -> big-endian NumPy dtype (the MNIST file format)
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}


@dataclass(frozen=True, eq=False)
class Dataset:
    """An in-memory training set.

    Parameters
    ----------
    X : ndarray, shape (N, d)
        Inputs, floating point.
    Y : ndarray
        Targets: ``(N, C)`` floats (autoencoder / regression) or ``(N,)`` integer labels
        (classification).
    task : {"autoencoder", "classification"}
    name : str
        Where the data came from (shown in messages and the run configuration).
    num_classes : int or None
        Number of classes for classification (labels are ``0 .. num_classes-1``).

    Examples
    --------
    >>> ds = load_digits("classification")
    >>> ds.X.shape, ds.Y.shape, ds.num_classes, ds.output_dim
    ((1797, 64), (1797,), 10, 10)
    """

    X: np.ndarray
    Y: np.ndarray
    task: str
    name: str = "data"
    num_classes: int | None = field(default=None)

    @property
    def num_examples(self) -> int:
        """``N``, the number of examples."""
        return int(self.X.shape[0])

    @property
    def input_dim(self) -> int:
        """``d``, the width of one input."""
        return int(self.X.shape[1])

    @property
    def output_dim(self) -> int:
        """Width of the network output this data needs (``d`` or the number of classes)."""
        if self.task == "classification":
            return int(self.num_classes)
        return int(self.Y.shape[1])

    def astype(self, dtype) -> "Dataset":
        """The same data with inputs (and float targets) cast to ``dtype``."""
        dtype = np.dtype(dtype)
        Y = self.Y if self.task == "classification" else self.Y.astype(dtype, copy=False)
        return Dataset(self.X.astype(dtype, copy=False), Y, self.task, self.name, self.num_classes)

    def check_output_dim(self, out_dim: int) -> None:
        """Raise :class:`DataError` unless a network with ``out_dim`` outputs fits this data."""
        if self.task == "classification":
            top = int(self.Y.max()) if self.Y.size else -1
            if top >= out_dim:
                raise DataError(
                    f"{self.name}: labels go up to {top} but the network has only {out_dim} "
                    f"outputs (classes 0..{out_dim - 1}); widen the output layer to at least "
                    f"{top + 1} or fix the labels"
                )
        elif out_dim != self.Y.shape[1]:
            raise DataError(
                f"{self.name}: targets have width {self.Y.shape[1]} but the network has "
                f"{out_dim} outputs; for an autoencoder the last layer must be "
                f"{self.Y.shape[1]} wide"
            )


def _check_task(task: str) -> str:
    if not isinstance(task, str) or task not in TASKS:
        raise ConfigurationError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


def _float_dtype(dtype) -> np.dtype:
    """``dtype`` as a NumPy floating dtype (ConfigurationError otherwise: an integer dtype
    would truncate the data, e.g. 0.7 to 0)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ConfigurationError(f"dtype {dtype!r} is not a NumPy dtype; use float64 or float32") from None
    if dt.kind != "f":
        raise ConfigurationError(
            f"dtype {dt} is not a floating-point type; data are stored as float64 or float32"
        )
    return dt


def _count(value, what: str, lo: int, error=ConfigurationError) -> int:
    """``value`` as an integer ``>= lo`` (bools and non-integral numbers refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < lo:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
        raise error(f"{what} must be {kind}, got {value!r}")
    return int(value)


def make_dataset(X, Y=None, task: str = "autoencoder", name: str = "data", dtype=np.float64,
                 num_classes: int | None = None) -> Dataset:
    """Validate arrays and build a :class:`Dataset`.

    ``X`` with more than two axes (e.g. images ``(N, 28, 28)``) is flattened to ``(N, d)``.
    For the autoencoder ``Y`` defaults to ``X``; for classification ``Y`` must be integer
    labels ``(N,)`` (integral floats are accepted), ``0 <= y < num_classes``.

    Examples
    --------
    >>> ds = make_dataset(np.eye(3), np.array([0, 2, 1]), task="classification")
    >>> ds.num_classes, ds.Y.dtype.kind
    (3, 'i')
    >>> make_dataset(np.eye(3), np.array([0, 5, 1]), task="classification", num_classes=3)
    Traceback (most recent call last):
    ...
    geomkfac.errors.DataError: data: label 5 (example 1) is out of range 0..2 for 3 classes
    """
    _check_task(task)
    dtype = _float_dtype(dtype)
    if not isinstance(name, str):
        raise ConfigurationError(f"the data set's name must be a string, got {type(name).__name__}")
    if num_classes is not None:
        num_classes = _count(num_classes, "num_classes", 1)
    X = _as_array(X, name, "X")
    if X.ndim < 2 or X.shape[0] == 0:
        raise DataError(f"{name}: X must have shape (N, d) with N >= 1 examples, got {X.shape}")
    if X.dtype.kind not in "biuf":
        raise DataError(f"{name}: X must be numeric, got dtype {X.dtype}")
    X = X.reshape(X.shape[0], -1).astype(dtype)
    if not np.all(np.isfinite(X)):
        raise DataError(f"{name}: X contains NaN or inf values")
    N = X.shape[0]
    if task == "autoencoder":
        Y = X if Y is None else _as_array(Y, name, "Y")
        if Y.dtype.kind not in "biuf":
            raise DataError(f"{name}: Y must be numeric, got dtype {Y.dtype}")
        if Y.ndim < 2 or Y.shape[0] != N:
            raise DataError(f"{name}: Y must have shape (N, C) with N = {N}, got {Y.shape}")
        Y = Y.reshape(N, -1).astype(dtype)
        if not np.all(np.isfinite(Y)):
            raise DataError(f"{name}: Y contains NaN or inf values")
        return Dataset(X, Y, task, name, None)
    if Y is None:
        raise DataError(f"{name}: classification needs labels Y, none were given")
    Y = _as_array(Y, name, "Y")
    if Y.ndim == 2 and Y.shape[1] == 1:
        Y = Y[:, 0]
    if Y.ndim != 1 or Y.shape[0] != N:
        raise DataError(f"{name}: labels Y must have shape (N,) with N = {N}, got {Y.shape}")
    if Y.dtype.kind == "f":
        if not np.all(np.isfinite(Y)) or np.any(Y != np.round(Y)):
            raise DataError(f"{name}: labels Y must be integers, got non-integral values")
    elif Y.dtype.kind not in "biu":
        raise DataError(f"{name}: labels Y must be integers, got dtype {Y.dtype}")
    Y = Y.astype(np.int64)
    if num_classes is None:
        num_classes = int(Y.max()) + 1
    bad = np.flatnonzero((Y < 0) | (Y >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{name}: label {Y[i]} (example {i}) is out of range 0..{num_classes - 1} "
            f"for {num_classes} classes"
        )
    return Dataset(X, Y, task, name, int(num_classes))


def _as_array(a, name: str, what: str) -> np.ndarray:
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise DataError(f"{name}: {what} is not a rectangular array ({exc})") from None


def load_digits(task: str = "autoencoder", dtype=np.float64, return_X_y: bool = False):
    """The embedded 8×8 handwritten digits (1,797 images), pixels scaled to ``[0, 1]``.

    Read from the package data ``geomkfac/data/digits.npz`` (no network access).

    Parameters
    ----------
    task : {"autoencoder", "classification"}
        Autoencoder: targets are the inputs. Classification: targets are the labels 0–9.
    dtype : float dtype of the inputs.
    return_X_y : bool
        Return the arrays ``(X, Y)`` instead of a :class:`Dataset` (as scikit-learn's
        loaders do).

    Returns
    -------
    Dataset, or ``(X, Y)`` with ``return_X_y``
        ``X`` is ``(1797, 64)``; ``Y`` is ``X`` itself (autoencoder) or the integer labels
        ``(1797,)`` (classification).

    Examples
    --------
    >>> ds = load_digits()
    >>> ds.X.shape, float(ds.X.min()), float(ds.X.max()), ds.Y is ds.X
    ((1797, 64), 0.0, 1.0, True)
    >>> X, y = load_digits("classification", return_X_y=True)
    >>> X.shape, y.shape, sorted(set(y.tolist())) == list(range(10))
    ((1797, 64), (1797,), True)
    """
    if not isinstance(return_X_y, (bool, np.bool_)):
        raise ConfigurationError(f"return_X_y must be True or False, got {return_X_y!r}")
    if return_X_y:
        ds = load_digits(task, dtype)
        return ds.X, ds.Y
    _check_task(task)
    dtype = _float_dtype(dtype)
    ref = importlib.resources.files("geomkfac.data").joinpath("digits.npz")
    with ref.open("rb") as fh:
        with np.load(fh, allow_pickle=False) as d:
            X, y = d["X"], d["y"]
    X = X.astype(dtype) / np.asarray(16.0, dtype=dtype)
    name = "digits"
    if task == "autoencoder":
        return Dataset(X, X, task, name, None)
    return make_dataset(X, y, task, name=name, dtype=dtype, num_classes=10)


def train_test_split(X, Y=None, test_fraction: float = 0.2, seed: int = 0, stratify: bool | None = None):
    """A seeded split into a training and a test part.

    Parameters
    ----------
    X : ndarray (N, ...) or Dataset
        The inputs, or a whole :class:`Dataset` (then ``Y`` is not given).
    Y : ndarray (N, ...), optional
        The targets (labels or arrays), split with the same permutation as ``X``.
    test_fraction : float
        The share of examples in the test part, ``0 < test_fraction < 1``; the test part has
        ``round(test_fraction · N)`` examples (at least one, leaving at least one to train).
    seed : int
        Seed of the permutation: the same seed gives the same split.
    stratify : bool, optional
        Keep the class proportions in both parts (each class contributes
        ``round(test_fraction · N_c)`` examples to the test part, so the test size can
        differ from ``round(test_fraction · N)`` by up to half the number of classes).
        Default: stratify when ``Y`` holds integer class labels ``(N,)``.

    Returns
    -------
    ``(X_train, X_test, Y_train, Y_test)``, or ``(train, test)`` Datasets for a Dataset
        Within each part the examples keep their original order.

    Raises
    ------
    DataError
        ``X`` and ``Y`` differ in length, or there are fewer than two examples.
    ConfigurationError
        ``test_fraction`` outside ``(0, 1)``, a negative seed, or ``stratify`` without labels.

    Examples
    --------
    >>> X, y = load_digits("classification", return_X_y=True)
    >>> X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_fraction=0.2, seed=0)
    >>> X_tr.shape, X_te.shape
    ((1438, 64), (359, 64))
    >>> [int(n) for n in np.bincount(y_te)]            # about 36 of each digit
    [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    >>> train, test = train_test_split(load_digits(), seed=1)
    >>> train.num_examples, test.num_examples, test.Y is test.X
    (1438, 359, True)
    """
    if isinstance(X, Dataset):
        if Y is not None:
            raise ConfigurationError("give either a Dataset or the arrays X and Y, not both")
        ds = X
        tr, te = _split_indices(ds.Y if ds.task == "classification" else None, ds.num_examples,
                                test_fraction, seed, stratify)
        def part(idx, tag):
            Xp = ds.X[idx]
            Yp = Xp if ds.Y is ds.X else ds.Y[idx]
            return Dataset(Xp, Yp, ds.task, f"{ds.name} ({tag})", ds.num_classes)
        return part(tr, "train"), part(te, "test")
    X = np.asarray(X)
    if X.ndim < 1:
        raise DataError("X must be an array of examples (N, ...), got a scalar")
    N = int(X.shape[0])
    if Y is not None:
        Y = np.asarray(Y)
        if Y.ndim < 1 or Y.shape[0] != N:
            raise DataError(f"X has {N} examples but Y has shape {Y.shape}; give one target per example")
    tr, te = _split_indices(Y, N, test_fraction, seed, stratify)
    if Y is None:
        return X[tr], X[te], None, None
    return X[tr], X[te], Y[tr], Y[te]


def _split_indices(Y, N: int, test_fraction, seed, stratify):
    """Sorted training and test indices (the seeded permutation, per class if stratified)."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.number)) \
            or not 0.0 < float(test_fraction) < 1.0:
        raise ConfigurationError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer, got {seed!r}")
    if N < 2:
        raise DataError(f"a train/test split needs at least 2 examples, got {N}")
    labels = Y is not None and Y.ndim == 1 and np.issubdtype(Y.dtype, np.integer)
    if stratify is None:
        stratify = bool(labels)
    if stratify and not labels:
        raise ConfigurationError("stratify=True needs integer class labels Y of shape (N,)")
    rng = np.random.default_rng(int(seed))
    if not stratify:
        n_test = min(max(int(round(float(test_fraction) * N)), 1), N - 1)
        perm = rng.permutation(N)
        test = perm[:n_test]
    else:
        test = []
        for c in np.unique(Y):
            members = np.flatnonzero(Y == c)
            k = int(round(float(test_fraction) * len(members)))
            test.extend(rng.permutation(members)[:k].tolist())
        test = np.asarray(test, dtype=np.int64)
        if len(test) == 0 or len(test) == N:  # tiny classes: fall back to one example either way
            perm = rng.permutation(N)
            test = perm[:1] if len(test) == 0 else perm[1:]
    mask = np.zeros(N, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def load_npz(path, task: str = "autoencoder", dtype=np.float64) -> Dataset:
    """A user data set from an ``.npz`` file with keys ``X`` (inputs) and ``Y`` (targets).

    For the autoencoder the targets are the inputs (``Y`` is not needed and ignored if
    present, so one file serves both tasks). Inputs are used as given (no rescaling).

    Raises
    ------
    DataError
        The file is missing, not a valid ``.npz``, lacks ``X`` (or ``Y`` for
        classification), or holds arrays of the wrong shape.
    """
    _check_task(task)
    dtype = _float_dtype(dtype)
    path = _fspath(path, "data file")
    if not os.path.exists(path):
        raise DataError(f"{path}: no such data file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a file; pass the path of an .npz file")
    try:
        with np.load(path, allow_pickle=False) as d:
            keys = set(d.files)
            if "X" not in keys:
                raise DataError(
                    f"{path}: missing array 'X' (found keys: {', '.join(sorted(keys)) or 'none'}); "
                    "save inputs as X and targets as Y"
                )
            X = d["X"]
            Y = d["Y"] if "Y" in keys else None
    except DataError:
        raise
    except PARSE_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if task == "autoencoder":
        return make_dataset(X, None, task, name=path, dtype=dtype)
    if Y is None:
        raise DataError(f"{path}: classification needs integer labels under key 'Y'")
    return make_dataset(X, Y, task, name=path, dtype=dtype)


def _fspath(path, what: str) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise DataError(f"the {what} must be given as a path, got {type(path).__name__}") from None


def _read_maybe_gzip(path: str) -> bytes:
    if not os.path.exists(path):
        raise DataError(f"{path}: no such IDX file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the IDX file ({exc}); pass the path of a file") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except PARSE_ERRORS as exc:
            raise DataError(f"{path}: corrupt gzip stream ({type(exc).__name__}: {exc})") from None
    return raw


def load_idx(path) -> np.ndarray:
    """Read an MNIST-style IDX file (raw or gzip-compressed) into a native-endian array.

    The header is two zero bytes, a dtype code (0x08 ubyte, 0x09 byte, 0x0B short,
    0x0C int, 0x0D float, 0x0E double), the number of dimensions, then each dimension
    as a big-endian uint32; the data follow, big-endian, C order.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.idx")
    >>> save_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> load_idx(p)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    path = _fspath(path, "IDX file")
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path}: bad IDX magic number {raw[:4].hex()} (must start with two zero bytes)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DataError(
            f"{path}: unknown IDX dtype code 0x{code:02X} "
            f"(expected one of {', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)})"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions need {header} bytes)")
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dt = _IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path}: IDX header declares shape {dims} of {dt.newbyteorder('=').name} "
            f"({expected} bytes in all) but the file has {len(raw)} bytes"
        )
    arr = np.frombuffer(raw, dtype=dt, offset=header).reshape(dims)
    return arr.astype(dt.newbyteorder("="))


def save_idx(path, array, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``compress`` or ``path`` ends in ``.gz``).

    Supported dtypes: uint8, int8, int16, int32, float32, float64.
    """
    path = os.fspath(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"{path}: dtype {array.dtype} cannot be stored in an IDX file")
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"{path}: IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.endswith(".gz")
    if compress:
        payload = gzip.compress(payload)
    with open(path, "wb") as fh:
        fh.write(payload)


def load_idx_dataset(images, labels=None, task: str = "autoencoder", dtype=np.float64) -> Dataset:
    """A data set from MNIST-style IDX files: ``images`` (N, …) and optional ``labels`` (N,).

    Integer images are scaled to ``[0, 1]`` by their dtype's maximum (255 for uint8); float
    images are used as given. Images with several axes are flattened.
    """
    _check_task(task)
    dtype = _float_dtype(dtype)
    images = _fspath(images, "IDX images file")
    X = load_idx(images)
    if X.ndim < 2:
        raise DataError(f"{images}: images must have at least 2 dimensions (N, ...), got {X.shape}")
    if X.dtype.kind in "iu":
        X = X.astype(dtype) / float(np.iinfo(X.dtype).max)
    if labels is None:
        if task == "classification":
            raise DataError(f"{images}: classification needs a labels file (--idx-labels)")
        return make_dataset(X, None, task, name=images, dtype=dtype)
    labels = _fspath(labels, "IDX labels file")
    y = load_idx(labels)
    if y.ndim != 1:
        raise DataError(f"{labels}: labels must be 1-D (N,), got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise DataError(
            f"{labels}: {y.shape[0]} labels but {images} has {X.shape[0]} images"
        )
    if task == "autoencoder":
        return make_dataset(X, None, task, name=images, dtype=dtype)
    return make_dataset(X, y, task, name=images, dtype=dtype)


class BatchIterator:
    """Deterministic, seeded, resumable mini-batches.

    Epoch ``e`` visits the examples in the permutation drawn from
    ``numpy.random.default_rng([seed, e])``, in consecutive batches of ``batch_size``
    (the last batch of an epoch is smaller when ``batch_size`` does not divide ``N``;
    ``batch_size >= N`` gives full-batch training, unshuffled). The state is just
    ``(epoch, position)``, so resuming from :meth:`state_dict` continues the same sequence
    exactly.

    Examples
    --------
    >>> it = BatchIterator(5, 2, seed=0)
    >>> [len(it.next_indices()) for _ in range(4)]
    [2, 2, 1, 2]
    >>> it.epoch, it.position
    (1, 2)
    >>> again = BatchIterator(5, 2, seed=0); again.load_state_dict(it.state_dict())
    >>> bool(np.array_equal(again.next_indices(), it.next_indices()))
    True
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int = 0):
        _count(num_examples, "the number of examples to iterate over", 1, DataError)
        _count(batch_size, "batch size", 1)
        _count(seed, "the seed", 0)
        self.num_examples = int(num_examples)
        self.batch_size = min(int(batch_size), self.num_examples)
        self.seed = int(seed)
        self.epoch = 0
        self.position = 0
        self._perm = None

    @property
    def batches_per_epoch(self) -> int:
        """Number of batches in one pass over the data."""
        return -(-self.num_examples // self.batch_size)

    def _permutation(self) -> np.ndarray:
        if self._perm is None or self._perm[0] != self.epoch:
            if self.batch_size >= self.num_examples:
                perm = np.arange(self.num_examples)
            else:
                perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_examples)
            self._perm = (self.epoch, perm)
        return self._perm[1]

    def next_indices(self) -> np.ndarray:
        """The indices of the next mini-batch (advances the state)."""
        perm = self._permutation()
        idx = perm[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        if self.position >= self.num_examples:
            self.epoch += 1
            self.position = 0
        return idx

    def next_batch(self, data: Dataset):
        """``(X_batch, Y_batch)`` of the next mini-batch of ``data``."""
        idx = self.next_indices()
        return data.X[idx], data.Y[idx]

    def state_dict(self) -> dict:
        """Everything needed to continue the same sequence: seed, batch size, epoch, position."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_examples": self.num_examples,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict` (it must describe the same data and batches).

        Raises
        ------
        ConfigurationError
            ``state`` is not such a dictionary, describes other data, batch size or seed,
            or a position that no sequence of batches reaches (nothing is modified).
        """
        keys = ("seed", "batch_size", "num_examples", "epoch", "position")
        if not isinstance(state, dict):
            raise ConfigurationError(
                f"a data-iterator state must be a dict from state_dict(), got {type(state).__name__}"
            )
        missing = [k for k in keys if k not in state]
        if missing or len(state) != len(keys):
            raise ConfigurationError(
                f"a data-iterator state has exactly the entries {', '.join(keys)}; "
                f"got {', '.join(sorted(map(str, state))) or 'none'}"
            )
        vals = {k: _count(state[k], f"the data iterator's {k}", 0) for k in keys}
        for key in ("seed", "batch_size", "num_examples"):
            if vals[key] != getattr(self, key):
                raise ConfigurationError(
                    f"saved data iterator has {key} = {vals[key]} but this run uses "
                    f"{getattr(self, key)}; resume with the same data, batch size and seed"
                )
        pos = vals["position"]
        if pos >= self.num_examples or pos % self.batch_size:
            raise ConfigurationError(
                f"saved data iterator is at position {pos}, which batches of {self.batch_size} "
                f"over {self.num_examples} examples never reach (0, {self.batch_size}, "
                f"{2 * self.batch_size}, ... below {self.num_examples})"
            )
        self.epoch = vals["epoch"]
        self.position = pos
        self._perm = None

    @property
    def batches_taken(self) -> int:
        """How many batches have been drawn so far: ``epoch · batches_per_epoch + position / batch_size``.

        >>> it = BatchIterator(5, 2); _ = [it.next_indices() for _ in range(4)]; it.batches_taken
        4
        """
        return self.epoch * self.batches_per_epoch + self.position // self.batch_size
