"""Fuzz targets shared by ``tests/test_fuzz.py`` (small, derandomized under CI) and
``benchmarks/fuzz_report.py`` (a larger campaign that counts the outcomes).

A *target* is a hypothesis strategy of bad or edge-case inputs and a function that feeds
one input to the public API. :func:`classify` runs it and names the outcome:

- ``"error"``: a :class:`~geomkfac.errors.GeomKFACError` (what bad input must give);
- ``"ok"``: it returned, and nothing it returned is NaN or inf;
- ``"other"``: any other exception (a raw Python / NumPy error escaped);
- ``"nan"``: it returned NaN or inf silently;
- ``"wrong"``: it returned a result that differs from the right one (e.g. a damaged
  checkpoint resumed as if it were intact);
- ``"hang"``: it ran past the time limit.

Only ``"error"`` and ``"ok"`` are acceptable.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import signal
import string
import tempfile
import warnings
import zipfile

import numpy as np
import sympy as sp
from hypothesis import strategies as st

import geomkfac.nn as gnn
from geomkfac import activations_sym
from geomkfac.errors import GeomKFACError
from geomkfac.nn import checkpoint as ckmod
from geomkfac.nn import data as D
from geomkfac.nn.cli import parse_arch
from geomkfac.nn.losses import get_loss
from geomkfac.nn.optim import get_optimizer
from geomkfac.nn.train import MetricsWriter, read_metrics, train
from geomkfac.reparam import random_affine, whitening
from geomkfac.spaces import AffineSpace, Covector, Point, Vector

OUTCOMES = ("error", "ok", "other", "nan", "wrong", "hang")

#: seconds one call may take before it counts as a hang (every target takes milliseconds)
TIME_LIMIT = 10.0


class SilentlyWrong(Exception):
    """Raised by a target whose call returned a wrong result without an error."""


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` swallows it."""


def _non_finite(obj, depth=0) -> bool:
    """True if ``obj`` (a number, array, or a list/tuple/dict of them) holds NaN or inf."""
    if depth > 8:
        return False
    if isinstance(obj, (bool, np.bool_, int, np.integer, str, bytes)) or obj is None:
        return False
    if isinstance(obj, (float, np.floating, complex, np.complexfloating)):
        return not np.isfinite(obj)
    if isinstance(obj, np.ndarray):
        return obj.dtype.kind in "fc" and not np.all(np.isfinite(obj))
    if isinstance(obj, dict):
        return any(_non_finite(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_non_finite(v, depth + 1) for v in obj)
    return False


@contextlib.contextmanager
def _alarm(seconds: float):
    def on_alarm(signum, frame):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def classify(run, case, time_limit: float = TIME_LIMIT) -> tuple[str, str]:
    """Run ``run(case)``; return ``(outcome, detail)`` (see the module docstring)."""
    try:
        with _alarm(time_limit), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out = run(case)
    except _Hang:
        return "hang", f"over {time_limit} s"
    except SilentlyWrong as exc:
        return "wrong", str(exc)
    except SystemExit as exc:
        return "other", f"SystemExit({exc.code})"
    except GeomKFACError as exc:
        return "error", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # the outcome to count, not to hide
        return "other", f"{type(exc).__name__}: {exc}"
    if _non_finite(out):
        return "nan", repr(out)[:200]
    return "ok", ""


# --------------------------------------------------------------------------- strategies

_specials = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, -1e300, 1e200,
                             np.nan, np.inf, -np.inf, 0.7])
_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), _specials)
_junk = st.one_of(st.none(), st.text(max_size=4), st.booleans(), st.just(object()),
                  st.just([1, [2]]), st.just({"a": 1}))


def bad_arrays(max_rows: int = 6, max_cols: int = 5):
    """Arrays as a careless user passes them: any shape (empty included), any dtype
    (ints, bools, strings, objects), NaN / inf / huge values, ragged lists, None."""
    dims = st.lists(st.integers(0, max_cols), min_size=0, max_size=3)
    numeric = dims.flatmap(lambda shape: st.lists(
        _floats, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
    ).map(lambda v, shape=shape: np.array(v, dtype=np.float64).reshape(shape)))
    cast = st.tuples(numeric, st.sampled_from(["float64", "float32", "int8", "int64", "bool",
                                               "U3", "object", "complex128"]))

    def do_cast(pair):
        a, dt = pair
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return a.astype(dt)
            except (ValueError, OverflowError):
                return a
    rows = st.integers(0, max_rows)
    well_shaped = st.tuples(rows, st.integers(1, max_cols)).flatmap(
        lambda rc: st.lists(_floats, min_size=rc[0] * rc[1], max_size=rc[0] * rc[1]).map(
            lambda v, rc=rc: np.array(v, dtype=np.float64).reshape(rc)))
    return st.one_of(cast.map(do_cast), well_shaped, _junk,
                     st.just([[1.0, 2.0], [3.0]]), st.just(np.empty((0, 3))))


def bad_names():
    """Names for activations, losses, optimizers, tasks, formats: near misses and junk."""
    near = st.sampled_from(["tanh ", "TANH", "relu6", "soft_max", "kfac2", "k-fac", "", " ",
                            "sgd,adam", "none", "None", "adam\x00", "ekfac\n", "mse2",
                            "autoencoder ", "classify", "jsonl2", "csv", "json"])
    return st.one_of(near, st.text(string.printable, max_size=8), _junk,
                     st.integers(-3, 3), st.floats())


def bad_numbers():
    """Hyperparameter values: negative, zero, huge, NaN, inf, bools, strings, None."""
    return st.one_of(_floats, st.integers(-5, 10**6), st.just(10**400), st.just(-(10**400)),
                     _junk, st.sampled_from([True, False, "0.1", "1e-3", [0.1], np.float32(0.1)]))


def frames_input():
    """``(B, c)`` for a change of frame on a 2-D space: singular, non-finite, wrong shape."""
    mats = st.one_of(
        st.lists(_floats, min_size=4, max_size=4).map(lambda v: np.array(v).reshape(2, 2)),
        st.just(np.zeros((2, 2))), st.just(np.array([[1.0, 2.0], [2.0, 4.0]])),
        st.just(np.eye(3)), st.just([[1, None], [0, 1]]), st.just("eye"), st.just(np.eye(2)),
        st.just([[1e-300, 0.0], [0.0, 1e300]]),
    )
    vecs = st.one_of(st.none(), st.lists(st.one_of(_floats, st.none()), min_size=0, max_size=3),
                     st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2))
    return st.tuples(mats, vecs, st.booleans())


def metrics_lines():
    """The text of a metrics file: valid records, then torn, garbled or truncated lines."""
    good_csv = ["step,epoch,loss,grad_norm,seconds,eval_loss\n",
                "1,0,0.5,1.0,0.01,\n", "2,0,0.4,0.9,0.02,0.45\n"]
    good_jsonl = ['{"step": 1, "epoch": 0, "loss": 0.5}\n', '{"step": 2, "epoch": 0, "loss": 0.4}\n']
    tail = st.one_of(st.text(max_size=30), st.sampled_from(
        ["3,0,0.3", '{"step": 3, "ep', "\n\n", "x,y\n", '{"step": "a"}\n', "[]\n", "3,0\n",
         "NaN,0,0.1,1,1,\n", "\x00\x00\n", '{"step": 1e400}\n']))
    return st.tuples(st.sampled_from(["csv", "jsonl"]), st.integers(0, 3), tail,
                     st.integers(0, 3)).map(
        lambda t: (t[0], "".join((good_csv if t[0] == "csv" else good_jsonl)[: t[1] + 1]) + t[2], t[3]))


def byte_mutations():
    """Edits of a file's bytes: flip bytes, truncate, insert, or replace the whole file."""
    flip = st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                               min_size=1, max_size=4))
    cut = st.tuples(st.just("cut"), st.floats(0, 1))
    insert = st.tuples(st.just("insert"), st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=8)))
    whole = st.tuples(st.just("whole"), st.binary(max_size=64))
    return st.one_of(flip, cut, insert, whole)


def mutate(raw: bytes, mutation) -> bytes:
    """Apply one mutation from :func:`byte_mutations` to ``raw``."""
    kind, arg = mutation
    if kind == "whole":
        return arg
    b = bytearray(raw)
    if not b:
        return bytes(b)
    if kind == "flip":
        for where, x in arg:
            i = min(int(where * len(b)), len(b) - 1)
            b[i] ^= x
        return bytes(b)
    if kind == "cut":
        return bytes(b[: int(arg * len(b))])
    where, data = arg
    i = int(where * len(b))
    return bytes(b[:i] + data + b[i:])


# --------------------------------------------------------------------------- files


_SCRATCH = []


def tmpdir():
    """A fresh temporary folder (the campaign runs outside pytest's fixtures); all of them
    live in one scratch folder removed when the process exits."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="geomkfac-fuzz-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return tempfile.mkdtemp(dir=_SCRATCH[0])


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def rewrite_member(path: str, member: str, transform) -> None:
    """Rewrite one member of a zip archive (``transform(bytes) -> bytes``), keeping valid
    zip CRCs, i.e. the kind of edit only a checksum over the payload detects."""
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members[member] = transform(members[member])
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)


def json_member(text: str) -> bytes:
    """A ``.npy`` holding the 0-d string ``text`` (how checkpoints store JSON)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(text))
    return buf.getvalue()


# --------------------------------------------------------------------------- targets


OPTIMIZERS = ("sgd", "adam", "diag_fisher", "ngd", "kfac", "ekfac")
_SPACE = AffineSpace(2, "F")
_REF = _SPACE.reference_frame
_SYM = _REF.derive(sp.Matrix([[2, 1], [0, 1]]), sp.Matrix([1, -1]), name="sym")
_NUM = _REF.derive(np.array([[2.0, 1.0], [0.0, 1.0]]), np.array([1.0, -1.0]), name="num")


def _data(n=12, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    return D.make_dataset(X, task="autoencoder", name="fuzz")


# -- arrays


def _run_make_dataset(case):
    X, Y, task, dtype, num_classes = case
    ds = D.make_dataset(X, Y, task=task, dtype=dtype, num_classes=num_classes)
    return ds.X, ds.Y


MAKE_DATASET = st.tuples(
    bad_arrays(), st.one_of(st.none(), bad_arrays()),
    st.one_of(st.sampled_from(D.TASKS), bad_names()),
    st.sampled_from([np.float64, np.float32, np.float16, np.int8, "float64", "bogus", None, bool]),
    st.one_of(st.none(), st.integers(-2, 5), bad_numbers()),
)

#: every bad array, strings and objects included (the optimizers' input checks refuse them)
_NUMERIC_BATCH = bad_arrays()


def _run_step(case):
    name, loss, X, Y = case
    model = gnn.MLP([3, 4, 2], "tanh", seed=0)
    opt = get_optimizer(name, model, loss)
    info = opt.step(X, Y)
    return info.loss, info.grad_norm, model.get_Wbars()


def _fitting_batch(cols):
    """``(n, cols)`` batches of the right shape holding special values (huge, NaN, ...)."""
    return st.integers(1, 5).flatmap(lambda n: st.lists(
        st.one_of(_specials, st.floats(-3, 3)), min_size=n * cols, max_size=n * cols).map(
        lambda v, n=n: np.array(v).reshape(n, cols)))


STEP = st.one_of(
    st.tuples(st.sampled_from(OPTIMIZERS), st.sampled_from(["mse", "bernoulli"]),
              _NUMERIC_BATCH.filter(lambda a: isinstance(a, np.ndarray)),
              _NUMERIC_BATCH.filter(lambda a: isinstance(a, np.ndarray))),
    st.tuples(st.sampled_from(OPTIMIZERS), st.sampled_from(["mse", "bernoulli"]),
              _fitting_batch(3), _fitting_batch(2)).map(  # inputs and targets of one length
        lambda t: (t[0], t[1], t[2][: len(t[3])], t[3][: len(t[2])])),
)


# -- convolutional and recurrent models (the layer backend)

_LAYER_MODELS = {"conv": ("conv3k3p1-max2-dense4", (1, 6, 6)), "rnn": ("rnn5-last-dense4", (4, 3))}


def _layer_batch(shape):
    """Batches near the right shape ``(N, *shape)``: wrong axes, empty, NaN/inf, huge."""
    def build(t):
        n, kind, fill = t
        if kind == "right":
            dims = (n, *shape)
        elif kind == "missing-axis":
            dims = (n, *shape[1:])
        elif kind == "extra-axis":
            dims = (n, *shape, 1)
        else:
            dims = (n, *shape[:-1], shape[-1] + 1)
        X = np.random.default_rng(n).random(dims)
        if fill is not None and X.size:
            X.reshape(-1)[0] = fill
        return X
    return st.tuples(st.integers(0, 3), st.sampled_from(["right", "right", "missing-axis", "extra-axis", "wider"]),
                     st.one_of(st.none(), _specials)).map(build)


def _run_layer_model(case):
    from geomkfac.nn.architectures import build_model

    kind, name, X, Y, other = case
    arch, shape = _LAYER_MODELS[kind]
    model = build_model(arch, shape, seed=0)
    opt = get_optimizer(name, model, "softmax_ce")
    if Y is None:  # labels that fit the batch
        Y = np.arange(len(X)) % 4
    info = opt.step(X, Y)
    if other:  # the state of another architecture must be refused, not crash in step()
        arch2 = arch.replace("conv3", "conv2").replace("rnn5", "rnn4")
        opt2 = get_optimizer(name, build_model(arch2, shape, seed=0), "softmax_ce")
        opt2.load_state_dict(opt.state_dict())
        opt2.step(X, Y)
    return info.loss, model.get_Wbars()


LAYER_MODELS = st.sampled_from(sorted(_LAYER_MODELS)).flatmap(lambda k: st.tuples(
    st.just(k), st.sampled_from(OPTIMIZERS), _layer_batch(_LAYER_MODELS[k][1]),
    st.one_of(st.none(), st.none(), st.integers(0, 3).map(lambda n: np.arange(n) % 4),
              _NUMERIC_BATCH.filter(lambda a: isinstance(a, np.ndarray))),
    st.booleans()))


# -- frames and values


def _run_frame(case):
    B, c, symbolic = case
    if symbolic:  # an exact B with the drawn offset: the offset is converted exactly
        frame = _REF.derive(sp.Matrix([[1, 2], [0, 3]]), c)
    else:
        frame = _REF.derive(B, c)
    p = Point(frame, [1.0, 2.0])
    return np.array(p.coords(_NUM), dtype=float), np.array(p.coords(_SYM).evalf(), dtype=float)


def _run_value(case):
    kind, coords, frame = case
    cls = {"point": Point, "vector": Vector, "covector": Covector}[kind]
    v = cls(frame, coords)
    out = [v.coords(f) for f in (_REF, _NUM, _SYM)]
    return [np.array(sp.Matrix(o).evalf() if isinstance(o, sp.MatrixBase) else o, dtype=float)
            for o in out]


VALUES = st.tuples(st.sampled_from(["point", "vector", "covector"]),
                   st.one_of(st.lists(st.one_of(_floats, st.none(), st.text(max_size=2)),
                                      min_size=0, max_size=3), bad_arrays(3, 3),
                             st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2)),  # valid ones too
                   st.sampled_from([_REF, _NUM, _SYM]))


# -- changes of frame of the reparameterization layer


def _run_changes(case):
    which, M, v, n = case
    if which == "whitening":
        ch = whitening(v, M)
        return ch.Omega, ch.gamma
    if which == "random_affine":
        ch = random_affine(n, 0, scale=1.0 if not isinstance(v, float) else v)
        return ch.Omega, ch.Phi
    if which == "nn_conjugated":
        act = gnn.ConjugatedActivation("tanh", M, v)
        return act.forward(np.ones((2, act.width)))
    act = activations_sym.ConjugatedActivation("tanh", M, v)
    return act(np.ones((2, act.n)))


CHANGES = st.tuples(st.sampled_from(["whitening", "random_affine", "nn_conjugated", "sym_conjugated"]),
                    frames_input().map(lambda t: t[0]), st.one_of(bad_arrays(3, 3), _floats),
                    st.one_of(st.integers(-2, 4), bad_numbers().filter(
                        lambda v: not isinstance(v, int) or v < 50)))  # n = 10**6 is a big request, not a bad one


# -- metrics files


def _run_metrics_file(case):
    fmt, text, resume = case
    path = os.path.join(tmpdir(), f"m.{fmt}")
    with open(path, "w", newline="") as fh:
        fh.write(text)
    before = read_metrics(path)
    w = MetricsWriter(path, resume_step=resume)
    rec = {"step": resume + 1, "epoch": 0, "loss": 0.25, "grad_norm": 1.0, "seconds": 0.5}
    w.write(rec)
    w.close()
    after = read_metrics(path)
    kept = [r for r in before if r["step"] <= resume]
    if after[-1] != {k: v for k, v in rec.items()} or after[:-1] != kept:
        raise SilentlyWrong(f"resume merged or lost records: {after}")
    return [r.get("loss") for r in after if isinstance(r.get("loss"), float)]


# -- names and hyperparameters


def _run_name(case):
    where, name = case
    if where == "activation":
        return gnn.get_activation(name).forward(np.ones((1, 2)))
    if where == "activation_sym":
        return activations_sym.get_activation(name)(np.ones((1, 2)))
    if where == "loss":
        return get_loss(name).value(np.zeros((2, 2)), np.zeros((2, 2)))
    if where == "optimizer":
        return get_optimizer(name, gnn.MLP([2, 2], seed=0), "mse").step(np.ones((2, 2)), np.ones((2, 2))).loss
    if where == "arch":
        return parse_arch(name)
    if where == "task":
        return D.make_dataset(np.ones((2, 2)), task=name).X
    if where == "format":
        MetricsWriter(os.path.join(tmpdir(), "m.txt"), fmt=name).close()
        return None
    return D.load_digits(name).X


NAMES = st.tuples(st.sampled_from(["activation", "activation_sym", "loss", "optimizer", "arch",
                                   "task", "format", "digits"]), bad_names())


def _run_hyper(case):
    name, key, value = case
    model = gnn.MLP([3, 4, 2], "tanh", seed=0)
    if key == "unknown_key":
        key = "lr_typo"
    opt = get_optimizer(name, model, "mse", **{key: value})
    X = np.linspace(0.0, 1.0, 15).reshape(5, 3)
    info = opt.step(X, np.zeros((5, 2)))
    return info.loss, model.get_Wbars()


HYPER = st.sampled_from(OPTIMIZERS).flatmap(lambda n: st.tuples(
    st.just(n),
    st.sampled_from(sorted(type(get_optimizer(n, gnn.MLP([2, 2]), "mse")).defaults) + ["unknown_key"]),
    bad_numbers()))


def _run_train_args(case):
    key, value = case
    model = gnn.MLP([3, 4, 3], "tanh", seed=0)
    opt = get_optimizer("sgd", model, "mse", lr=0.1)
    kwargs = {"steps": 2, "batch_size": 4}
    if key == "data":
        data = value
    else:
        data = _data()
        kwargs[key] = value
        if key == "epochs":
            kwargs.pop("steps")
    res = train(model, opt, data, **kwargs)
    return res.final_loss, model.get_Wbars()


TRAIN_ARGS = st.tuples(st.sampled_from(["steps", "epochs", "batch_size", "seed", "eval_every",
                                        "checkpoint_every", "name", "data", "config"]),
                       bad_numbers().filter(lambda v: not isinstance(v, int) or -10 < v < 50))


# -- files


def _valid_files(folder: str) -> dict:
    rng = np.random.default_rng(0)
    X = rng.random((6, 5))
    paths = {"npz": os.path.join(folder, "d.npz"), "idx": os.path.join(folder, "i.idx"),
             "idx_gz": os.path.join(folder, "i.idx.gz"), "labels": os.path.join(folder, "l.idx")}
    with open(paths["npz"], "wb") as fh:
        fh.write(npz_bytes(X=np.repeat(X, 200, axis=0), Y=np.arange(1200) % 3))
    D.save_idx(paths["idx"], (X * 255).astype(np.uint8))
    D.save_idx(paths["idx_gz"], X.astype(np.float32))
    D.save_idx(paths["labels"], np.arange(6).astype(np.uint8) % 3)
    return paths


def _run_data_file(case):
    which, mutation, task = case
    paths = _valid_files(tmpdir())
    p = paths[which]
    with open(p, "rb") as fh:
        raw = fh.read()
    with open(p, "wb") as fh:
        fh.write(mutate(raw, mutation))
    if which == "npz":
        ds = D.load_npz(p, task)
    elif which == "labels":
        ds = D.load_idx_dataset(paths["idx"], p, task)
    else:
        ds = D.load_idx_dataset(p, paths["labels"], task)
    return ds.X, ds.Y


DATA_FILES = st.tuples(st.sampled_from(["npz", "idx", "idx_gz", "labels"]), byte_mutations(),
                       st.sampled_from(D.TASKS))


# -- checkpoints


def _trained(folder: str, name: str = "kfac"):
    """A checkpoint after 3 steps of a small run, and the states it must restore."""
    model = gnn.MLP([3, 4, 3], "tanh", seed=0)
    opt = get_optimizer(name, model, "mse")
    path = os.path.join(folder, "c.npz")
    train(model, opt, _data(), steps=3, batch_size=5, checkpoint_path=path, checkpoint_every=1)
    it = D.BatchIterator(12, 5, 0)
    for _ in range(3):
        it.next_indices()
    return path, model, opt, it


def _same_state(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape \
            and a.tobytes() == b.tobytes()
    return type(a) is type(b) and (a == b or (a != a and b != b))


_META_EDITS = ['[]', '7', '"x"', '{}', '{"format_version": 2}',
               '{"format_version": 2, "step": -1, "num_layers": 2, "config": {}}',
               '{"format_version": 2, "step": 4, "num_layers": 2, "config": {}}',
               '{"format_version": 2, "step": 3, "num_layers": 5, "config": {}}',
               '{"format_version": 2, "step": 3, "num_layers": 2, "config": []}',
               '{"format_version": 2, "step": 3.5, "num_layers": 2, "config": {}}',
               '{"format_version": 2, "step": true, "num_layers": 2, "config": {}}',
               '{"format_version": 1, "step": 3, "num_layers": 2, "config": {}}']
_SCHEMA_EDITS = ['7', '[]', '{}', '{"py": 5}', '{"dict": []}', '{"array": "state/999"}',
                 '{"dict": {"optimizer": {"py": null}, "iterator": {"py": null}, "extra": {"dict": {}}}}',
                 '{"list": [{"int": "x"}]}', '{"float": "zz"}', '{"dict": {"a": {"nope": 1}}}']


def _edit_structure(path: str, edit) -> None:
    """Rewrite one entry and recompute the checksum: only structural validation can tell."""
    kind, arg = edit
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    if kind == "meta":
        members["__meta__.npy"] = json_member(_META_EDITS[arg % len(_META_EDITS)])
    elif kind == "schema":
        members["__schema__.npy"] = json_member(_SCHEMA_EDITS[arg % len(_SCHEMA_EDITS)])
    else:  # an array of the wrong dtype or shape in place of a state or weight array
        names = sorted(m for m in members if m.startswith(("state/", "model/")))
        target = names[arg % len(names)]
        old = np.lib.format.read_array(io.BytesIO(members[target]))
        new = [old.astype(np.float32), old.astype(np.int64), old.reshape(-1)[:1],
               np.zeros(old.shape + (2,)), np.array("x"), old * np.nan][arg % 6]
        buf = io.BytesIO()
        np.lib.format.write_array(buf, new)
        members[target] = buf.getvalue()
    members["__checksum__.npy"] = json_member(ckmod._digest(members))
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)


def _run_checkpoint(case):
    name, how, edit = case
    folder = tmpdir()
    path, model0, opt0, it0 = _trained(folder, name)
    if how == "bytes":
        with open(path, "rb") as fh:
            raw = fh.read()
        with open(path, "wb") as fh:
            fh.write(mutate(raw, edit))
    elif how == "member":  # a member changed, zip CRCs recomputed: the checksum tells
        member = ["model/Wbar_0.npy", "__meta__.npy", "__schema__.npy"][edit[1] % 3]
        rewrite_member(path, member, lambda b, e=edit: mutate(b, e[0]))
    else:
        _edit_structure(path, edit)
    ck = ckmod.load_checkpoint(path)
    model = gnn.MLP([3, 4, 3], "tanh", seed=1)
    opt = get_optimizer(name, model, "mse")
    it = D.BatchIterator(12, 5, 0)
    step = ck.restore(model, opt, it)
    from geomkfac.nn.train import _check_resume_counters
    _check_resume_counters(ck, opt, it, path)
    same = (step == 3 and _same_state(opt.state_dict(), opt0.state_dict())
            and _same_state(it.state_dict(), it0.state_dict())
            and all(a.tobytes() == b.tobytes() for a, b in zip(model.get_Wbars(), model0.get_Wbars())))
    if not same:
        raise SilentlyWrong("a damaged checkpoint was restored with a different state")
    return model.get_Wbars()


CHECKPOINTS = st.tuples(
    st.sampled_from(["adam", "kfac", "ngd"]),
    st.one_of(
        st.tuples(st.just("bytes"), byte_mutations()),
        st.tuples(st.just("member"), st.tuples(byte_mutations(), st.integers(0, 2))),
        st.tuples(st.just("structure"), st.tuples(st.sampled_from(["meta", "schema", "array"]),
                                                  st.integers(0, 60))),
    ),
).map(lambda t: (t[0], t[1][0], t[1][1]))


# -- the command line


class CommandLineFailure(Exception):
    """The command failed without the one-line message and exit code 2."""


_FLAG_VALUES = {
    "--seed": ["-1", "0", "x", "1e3", "99999999999999999999999"],
    "--steps": ["-1", "0", "1", "2", "x", ""],
    "--epochs": ["-1", "0", "x"],
    "--batch-size": ["0", "-3", "5000", "a", "50"],
    "--lr": ["-1", "nan", "inf", "0", "1e400", "sgd=x", "kfac=1,foo=2", "=", "0.1"],
    "--momentum": ["2", "-1", "nan", "0.9", "sgd=0.5"],
    "--damping": ["-1", "0", "inf", "nan", "1e-3"],
    "--opt-arg": ["fisher=bogus", "kl_clip=-1", "nope=1", "x", "kfac:=1", "inverse_update_period=0",
                  "seed=-1", "momentum=nan"],
    "--arch": ["64-0-64", "64", "x-y", "63-10-64", "64--64", "64-10-64", "64-1e9-64", "64-10-10",
               "conv2k3-dense64", "conv0k3-dense10", "conv2k99-dense64", "rnn4-dense8", "rnn4-last-dense10",
               "max2-dense64", "flatten", "dense0"],
    "--act": ["bogus", "tanh,relu", ",", "TANH", "softplus"],
    "--optimizer": ["bogus", "sgd,sgd", ",", "kfac", "ekfac", "sgd,adam", "ngd"],
    "--loss": ["bogus", "softmax_ce", "mse", "bernoulli"],
    "--task": ["classification", "bogus"],
    "--format": ["jsonl", "xml"],
    "--checkpoint-every": ["0", "-1", "1"],
    "--eval-every": ["0", "1", "-5"],
    "--dtype": ["float16", "float32"],
    "--out": ["/dev/null/x", "/proc/geomkfac-x", ""],
    "--data": ["missing.npz", "/dev/null", "."],
    "--idx-images": ["missing.idx", "/dev/null"],
    "--idx-labels": ["missing.idx"],
}


def _run_command_line(case):
    from geomkfac.cli import main

    command, flags = case
    out = tmpdir()
    if command == "prove":
        argv = ["prove", "B.1", "--fast", "--quiet"] + [a for f in flags for a in f]
    else:
        argv = ["train", "--no-progress", "--steps", "1", "--arch", "64-8-64", "--out", out] \
            + [a for f in flags for a in f]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        cwd = os.getcwd()
        os.chdir(out)  # relative paths (missing.npz, ...) resolve in the scratch folder
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage line + error line, exit 2
            code = exc.code
        finally:
            os.chdir(cwd)
    text = err.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if "Traceback" in text or "internal error" in text or code not in (0, 1, 2):
        raise CommandLineFailure(f"exit {code}: {text[-300:]}")
    if code == 2 and not (len(lines) == 1 or (len(lines) == 2 and lines[0].startswith("usage:"))):
        raise CommandLineFailure(f"exit 2 with {len(lines)} lines: {text[-300:]}")
    return code


_TRAIN_FLAGS = st.lists(st.sampled_from(sorted(_FLAG_VALUES)).flatmap(
    lambda f: st.sampled_from(_FLAG_VALUES[f]).map(lambda v, f=f: (f, v))), max_size=3)
COMMAND_LINES = st.one_of(
    st.tuples(st.just("train"), _TRAIN_FLAGS),
    st.tuples(st.just("prove"), st.lists(st.sampled_from(
        [("--report", "/proc/nope/r.md"), ("--report", "/dev/null/r.md"), ("--report", "."),
         ("--dir", "/nonexistent"), ("--dir", "/dev/null"), ("Z.9",), ("--fast",)]), max_size=2)),
)


#: name -> (strategy, run)
TARGETS = {
    "make_dataset": (MAKE_DATASET, _run_make_dataset),
    "optimizer_step": (STEP, _run_step),
    "layer_models": (LAYER_MODELS, _run_layer_model),
    "frames": (frames_input(), _run_frame),
    "values": (VALUES, _run_value),
    "frame_changes": (CHANGES, _run_changes),
    "metrics_files": (metrics_lines(), _run_metrics_file),
    "names": (NAMES, _run_name),
    "hyperparameters": (HYPER, _run_hyper),
    "train_arguments": (TRAIN_ARGS, _run_train_args),
    "data_files": (DATA_FILES, _run_data_file),
    "checkpoints": (CHECKPOINTS, _run_checkpoint),
    "command_line": (COMMAND_LINES, _run_command_line),
}


# --------------------------------------------------------------------------- kill and resume

#: a small, quick training command: K-FAC on the digits autoencoder, frequent checkpoints
TRAIN_ARGV = ["train", "--arch", "64-16-64", "--optimizer", "kfac", "--batch-size", "64",
              "--checkpoint-every", "3", "--no-progress", "--format", "jsonl"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(argv, timeout=300, kill_after_lines=None, metrics=None):
    """Run ``python -m geomkfac.cli *argv`` in a subprocess (from the repository root).

    With ``kill_after_lines``, SIGKILL it as soon as ``metrics`` has that many complete
    lines. Returns ``(returncode, stderr)``.
    """
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "geomkfac.cli", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after_lines is not None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with open(metrics, "rb") as fh:
                    if fh.read().count(b"\n") >= kill_after_lines:
                        proc.send_signal(signal.SIGKILL)
                        break
            except OSError:
                pass
            time.sleep(0.002)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def final_state(out: str):
    """The weights, optimizer state and metrics (without timings) a run left in ``out``."""
    ck = ckmod.load_checkpoint(os.path.join(out, "checkpoint-kfac.npz"))
    recs = read_metrics(os.path.join(out, "metrics-kfac.jsonl"))
    return ck.step, ck.Wbars, ck.optimizer_state, [{k: v for k, v in r.items() if k != "seconds"}
                                                   for r in recs]


def same_final_state(a, b) -> bool:
    return (a[0] == b[0] and len(a[1]) == len(b[1])
            and all(x.tobytes() == y.tobytes() for x, y in zip(a[1], b[1]))
            and _same_state(a[2], b[2]) and a[3] == b[3])


def kill_and_resume_trial(reference, out: str, steps: int, kill_after: int) -> str:
    """SIGKILL a run after ``kill_after`` metrics lines, resume it, compare with the
    uninterrupted ``reference`` (from :func:`final_state`): ``"exact"``, ``"clean: …"``
    (exit 2 with one line, e.g. no checkpoint yet), ``"different"`` or ``"failed: …"``."""
    argv = TRAIN_ARGV + ["--steps", str(steps), "--out", out]
    code, err = run_cli(argv, kill_after_lines=kill_after,
                        metrics=os.path.join(out, "metrics-kfac.jsonl"))
    code, err = run_cli(argv + ["--resume"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code == 2 and len(lines) == 1 and "Traceback" not in err:
        return f"clean: {lines[0][-160:]}"  # e.g. killed before the first checkpoint
    if code != 0:
        return f"failed: exit {code}: {err.strip()[-200:]}"
    return "exact" if same_final_state(final_state(out), reference) else "different"


#: damage done to a checkpoint before ``--resume``: name -> (raw bytes, path) -> raw bytes
CORRUPTIONS = {
    "truncate-half": lambda raw: raw[: len(raw) // 2],
    "truncate-tail": lambda raw: raw[:-7],
    "empty": lambda raw: b"",
    "garbage": lambda raw: b"not a checkpoint at all",
    "zeros": lambda raw: bytes(len(raw)),
    "append": lambda raw: raw + b"\x00" * 10,
}
for _frac in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
    CORRUPTIONS[f"flip-at-{_frac}"] = (lambda f: lambda raw: mutate(raw, ("flip", [(f, 0x10)])))(_frac)


def _edit_member(member, transform, fix_checksum):
    def edit(path):
        members = _zip_members(path)
        members[member] = transform(members[member])
        if fix_checksum:
            members["__checksum__.npy"] = json_member(ckmod._digest(members))
        _zip_write(path, members)
    return edit


def _zip_members(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _zip_write(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)


def _npy_edit(f):
    def transform(raw):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, f(np.lib.format.read_array(io.BytesIO(raw))))
        return buf.getvalue()
    return transform


def _one_ulp(a):
    a = a.copy()
    a.reshape(-1)[0] = np.nextafter(a.reshape(-1)[0], np.inf)
    return a


def _meta_edit(**changes):
    return lambda raw: json_member(json.dumps({**json.loads(str(np.lib.format.read_array(io.BytesIO(raw)))),
                                               **changes}))


#: edits of one member, valid zip: name -> edit(path); "+sum" ones recompute the checksum
MEMBER_EDITS = {
    "weight-one-ulp": _edit_member("model/Wbar_0.npy", _npy_edit(_one_ulp), False),
    "weight-float32": _edit_member("model/Wbar_0.npy", _npy_edit(lambda a: a.astype(np.float32)), False),
    "weight-one-ulp+sum": None,  # filled below: a consistent, well-formed edit (undetectable in principle)
    "weight-nan+sum": _edit_member("model/Wbar_0.npy", _npy_edit(lambda a: a * np.nan), True),
    "weight-float32+sum": _edit_member("model/Wbar_0.npy", _npy_edit(lambda a: a.astype(np.float32)), True),
    "weight-shape+sum": _edit_member("model/Wbar_0.npy", _npy_edit(lambda a: a[:, :-1]), True),
    "meta-step+1": _edit_member("__meta__.npy", _meta_edit(step=1), False),
    "meta-step-1+sum": _edit_member("__meta__.npy", _meta_edit(step=-1), True),
    "meta-step+sum": _edit_member("__meta__.npy", _meta_edit(step=1), True),
    "meta-list+sum": _edit_member("__meta__.npy", lambda raw: json_member("[]"), True),
    "meta-version+sum": _edit_member("__meta__.npy", _meta_edit(format_version=1), True),
    "meta-layers+sum": _edit_member("__meta__.npy", _meta_edit(num_layers=3), True),
    "meta-config+sum": _edit_member("__meta__.npy", _meta_edit(config={"arch": [64, 8, 64]}), True),
    "schema-7+sum": _edit_member("__schema__.npy", lambda raw: json_member("7"), True),
    "schema-garbage": _edit_member("__schema__.npy", lambda raw: json_member("{{{"), False),
    "checksum-garbage": _edit_member("__checksum__.npy", lambda raw: json_member("x" * 64), False),
    "checksum-missing": lambda path: _zip_write(path, {k: v for k, v in _zip_members(path).items()
                                                       if k != "__checksum__.npy"}),
}
del MEMBER_EDITS["weight-one-ulp+sum"]


def run_cli_in_process(argv, **_):
    """Like :func:`run_cli`, in this process (no start-up cost): ``(exit code, stderr)``."""
    from geomkfac.cli import main

    err = io.StringIO()
    cwd = os.getcwd()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            os.chdir(ROOT)
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
        finally:
            os.chdir(cwd)
    return code, err.getvalue()


def corrupt_trial(good_dir: str, out: str, steps: int, how: str, reference, runner=run_cli) -> str:
    """Copy a run's folder, damage its checkpoint (:data:`CORRUPTIONS` or
    :data:`MEMBER_EDITS`), resume it to ``steps``: ``"clean"`` (exit 2, one line naming the
    checkpoint), ``"exact"`` (the damage left the payload intact and the run equals the
    intact resume ``reference``), or ``"wrong: …"`` (a traceback, another exit code, or a
    different result)."""
    shutil.copytree(good_dir, out, dirs_exist_ok=True)
    path = os.path.join(out, "checkpoint-kfac.npz")
    if how in CORRUPTIONS:
        with open(path, "rb") as fh:
            raw = fh.read()
        with open(path, "wb") as fh:
            fh.write(CORRUPTIONS[how](raw))
    else:
        MEMBER_EDITS[how](path)
    code, err = runner(TRAIN_ARGV + ["--steps", str(steps), "--out", out, "--resume"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code == 2 and len(lines) == 1 and "checkpoint-kfac.npz" in lines[0] and "Traceback" not in err:
        return "clean"
    if code == 0 and same_final_state(final_state(out), reference):
        return "exact"
    return f"wrong: exit {code}: {err.strip()[-300:]}"
