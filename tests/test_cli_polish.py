"""``geomkfac train`` everyday use: a non-empty ``--out`` refused unless ``--resume`` /
``--force`` (which removes every optimizer's stale files), ``--threads``, distinct help texts;
``load_digits(return_X_y=True)``, the seeded ``train_test_split`` and BLAS thread limits."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geomkfac.nn as gnn
from geomkfac.cli import build_parser, main
from geomkfac.errors import ConfigurationError, DataError
from geomkfac.nn.data import load_digits, train_test_split
from geomkfac.nn.train import read_metrics
from geomkfac.threads import BLAS_THREAD_VARS, blas_threads, limit_blas_threads

QUICK = ["--arch", "64-8-64", "--steps", "2", "--batch-size", "50", "--no-progress"]


def _run(capsys, *argv):
    rc = main(["train", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


# --------------------------------------------------------------------------- --out


def test_non_empty_out_is_refused_and_left_untouched(tmp_path, capsys):
    out = tmp_path / "runs"
    assert _run(capsys, *QUICK, "--optimizer", "sgd", "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, _, err = _run(capsys, *QUICK, "--optimizer", "sgd", "--lr", "0.5", "--out", out)
    assert rc == 2 and err.startswith("geomkfac train: error: --out") and "is not empty" in err
    assert "--force" in err and "--resume" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten
    # a directory holding only an unrelated file is not empty either
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _run(capsys, *QUICK, "--optimizer", "sgd", "--out", other)[0] == 2
    # control: an empty existing directory is accepted
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(capsys, *QUICK, "--optimizer", "sgd", "--out", empty)[0] == 0


def test_force_removes_every_optimizers_stale_files_and_keeps_others(tmp_path, capsys):
    out = tmp_path / "runs"
    assert _run(capsys, *QUICK, "--optimizer", "sgd,adam", "--checkpoint-every", "1", "--out", out)[0] == 0
    (out / "notes.txt").write_text("mine")
    assert {"metrics-adam.csv", "checkpoint-adam.npz", "checkpoint-adam.npz.prev"} <= {p.name for p in out.iterdir()}
    rc, _, err = _run(capsys, *QUICK, "--optimizer", "sgd", "--lr", "0.5", "--force", "--out", out)
    assert rc == 0, err
    assert "--force: deleted" in err and "metrics-adam.csv" in err
    names = {p.name for p in out.iterdir()}
    assert names == {"metrics-sgd.csv", "checkpoint-sgd.npz", "loss.png", "notes.txt"}, names
    assert (out / "notes.txt").read_text() == "mine"
    assert read_metrics(out / "metrics-sgd.csv")[0]["lr"] == 0.5  # the new run's file


def test_resume_writes_into_its_own_directory_and_force_excludes_resume(tmp_path, capsys):
    out = tmp_path / "runs"
    assert _run(capsys, *QUICK, "--optimizer", "sgd", "--out", out)[0] == 0
    rc, _, err = _run(capsys, *QUICK[:2], "--steps", "3", "--batch-size", "50", "--no-progress",
                      "--optimizer", "sgd", "--resume", "--out", out)
    assert rc == 0, err
    assert [r["step"] for r in read_metrics(out / "metrics-sgd.csv")][-1] == 3
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", "--force", "--out", str(out)])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --------------------------------------------------------------------------- --threads


@pytest.fixture
def restore_threads(monkeypatch):
    for k in BLAS_THREAD_VARS:  # monkeypatch restores the environment afterwards
        monkeypatch.setenv(k, os.environ.get(k, ""))
    before = blas_threads()
    yield
    for n in set(before.values()):
        limit_blas_threads(n, set_environment=False)


def _threadpoolctl_counts():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]


def test_limit_blas_threads_read_back_by_threadpoolctl(restore_threads):
    """Set through our ctypes route, read through threadpoolctl's (an independent route)."""
    pytest.importorskip("threadpoolctl")
    if not blas_threads():
        pytest.skip("the loaded BLAS libraries cannot be listed on this platform")
    for n in (1, 2):
        done = limit_blas_threads(n)
        assert done and set(done.values()) == {n}
        assert set(_threadpoolctl_counts()) == {n}
        assert all(os.environ[k] == str(n) for k in BLAS_THREAD_VARS)
    with pytest.raises(ConfigurationError, match="positive integer"):
        limit_blas_threads(0)
    with pytest.raises(ConfigurationError, match="positive integer"):
        limit_blas_threads(True)


def test_max_blas_threads_follows_the_limit_and_threadpoolctl(restore_threads):
    """The cached getters read the live counts: a limit set by our route or by threadpoolctl's
    (an independent route) is seen at once, and a library loaded later (SciPy's BLAS after
    its import) is listed."""
    from geomkfac.threads import max_blas_threads

    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not blas_threads():
        pytest.skip("the loaded BLAS libraries cannot be listed on this platform")
    import scipy.linalg  # noqa: F401  (SciPy's own BLAS)

    for n in (2, 1):
        limit_blas_threads(n, set_environment=False)
        assert max_blas_threads() == n == max(_threadpoolctl_counts())
    with threadpoolctl.threadpool_limits(2):
        assert max_blas_threads() == max(_threadpoolctl_counts()) == 2
    assert max_blas_threads() == 1


def test_kfac_inverts_small_factors_by_cholesky_only_with_one_blas_thread(restore_threads,
                                                                       monkeypatch):
    """With two BLAS threads the digits-sized factors go through NumPy's LU (switching to
    SciPy's thread pool is slow there), with one thread through Cholesky."""
    import numpy as np

    from geomkfac.nn import MLP, get_optimizer
    from geomkfac.nn.optim import kronecker

    if not blas_threads():
        pytest.skip("the loaded BLAS libraries cannot be listed on this platform")
    seen = []
    real = kronecker._inv
    monkeypatch.setattr(kronecker, "_inv", lambda M, cholesky=False: (seen.append(cholesky),
                                                                       real(M, cholesky))[1])
    X = np.random.default_rng(0).random((20, 4))
    for n, expected in ((2, False), (1, True)):
        limit_blas_threads(n, set_environment=False)
        seen.clear()
        opt = get_optimizer("kfac", MLP([4, 6, 4], "tanh", seed=0), "mse", lr=0.1)
        opt.step(X, X)
        assert seen and set(seen) == {expected}, (n, seen)


def test_train_threads_option(tmp_path, capsys, restore_threads):
    pytest.importorskip("threadpoolctl")
    if not blas_threads():
        pytest.skip("the loaded BLAS libraries cannot be listed on this platform")
    limit_blas_threads(2, set_environment=False)
    assert set(_threadpoolctl_counts()) == {2}  # control: the limit below is what changes it
    rc, _, err = _run(capsys, *QUICK, "--optimizer", "sgd", "--threads", "1", "--out", tmp_path / "a")
    assert rc == 0, err
    assert set(_threadpoolctl_counts()) == {1}
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    rc, _, err = _run(capsys, *QUICK, "--optimizer", "sgd", "--threads", "0", "--out", tmp_path / "b")
    assert rc == 2 and "--threads must be a positive integer" in err


# --------------------------------------------------------------------------- help texts


def _subparsers() -> dict:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _train_parser() -> argparse.ArgumentParser:
    return _subparsers()["train"]


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_option_of_every_command_has_its_own_help(command):
    opts = [a for a in _subparsers()[command]._actions if a.option_strings and a.dest != "help"]
    helps = [a.help for a in opts]
    assert all(h and len(h) > 10 for h in helps), [a.dest for a in opts if not a.help or len(a.help) <= 10]
    assert len(set(helps)) == len(helps), "two options share a help text"


def test_train_help_texts_say_what_each_option_is():
    by = {a.dest: a.help for a in _train_parser()._actions if a.option_strings}
    assert "learning rate" in by["lr"] and "--lr kfac=" in by["lr"]
    assert "momentum" in by["momentum"] and "--momentum sgd=0.9" in by["momentum"]
    assert "lr" not in by["momentum"] and "lr" not in by["damping"]
    assert "damping" in by["damping"] and "--damping kfac=" in by["damping"]
    assert "--resume" in by["out"] and "--force" in by["out"]
    assert "BLAS" in by["threads"]


def test_help_momentum_and_damping_name_the_optimizers_that_take_them():
    from geomkfac.nn.cli import _accepted_keys
    from geomkfac.nn.optim import get_optimizer

    by = {a.dest: a.help for a in _train_parser()._actions if a.option_strings}
    for name in ("sgd", "adam", "diag_fisher", "ngd", "kfac", "ekfac"):
        keys = _accepted_keys(get_optimizer(name, gnn.MLP([2, 2], seed=0), "mse"))
        # damping: the optimizers listed are exactly those that take it
        assert (name in by["damping"]) == ("damping" in keys), name
        # momentum: "every optimizer but adam"
        assert ("momentum" in keys) == (name != "adam"), name
    assert "but adam" in by["momentum"]


# --------------------------------------------------------------------------- data helpers


def test_load_digits_return_X_y_matches_the_dataset():
    ds = load_digits("classification")
    X, y = gnn.load_digits("classification", return_X_y=True)
    assert np.array_equal(X, ds.X) and np.array_equal(y, ds.Y)
    Xa, Ya = load_digits(return_X_y=True)
    assert Ya is Xa and Xa.shape == (1797, 64)
    with pytest.raises(ConfigurationError, match="return_X_y"):
        load_digits(return_X_y="yes")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), frac=st.floats(0.05, 0.95), seed=st.integers(0, 2**31),
       classes=st.integers(1, 4), stratify=st.sampled_from([None, False]))
def test_split_is_a_seeded_partition(n, frac, seed, classes, stratify):
    X = np.arange(n * 2, dtype=float).reshape(n, 2)
    y = np.arange(n) % classes
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_fraction=frac, seed=seed, stratify=stratify)
    ids = np.concatenate([X_tr[:, 0], X_te[:, 0]]) / 2
    assert sorted(ids.tolist()) == list(range(n))  # disjoint, and together every example once
    assert np.array_equal(y_tr, (X_tr[:, 0] // 2).astype(int) % classes)  # rows stay paired
    assert 1 <= len(X_te) <= n - 1
    if stratify is False:
        assert len(X_te) == min(max(round(frac * n), 1), n - 1)
    again = train_test_split(X, y, test_fraction=frac, seed=seed, stratify=stratify)
    assert all(np.array_equal(a, b) for a, b in zip(again, (X_tr, X_te, y_tr, y_te)))


def test_split_stratifies_labels_and_depends_on_the_seed():
    X, y = load_digits("classification", return_X_y=True)
    _, _, _, y_te = train_test_split(X, y, test_fraction=0.2, seed=0)
    expected = np.round(0.2 * np.bincount(y))
    assert np.array_equal(np.bincount(y_te), expected)
    # negative control: without stratification the class counts are not all the rounded shares
    _, _, _, y_plain = train_test_split(X, y, test_fraction=0.2, seed=0, stratify=False)
    assert not np.array_equal(np.bincount(y_plain, minlength=10), expected)
    a = train_test_split(X, y, seed=0)[1]
    b = train_test_split(X, y, seed=1)[1]
    assert not np.array_equal(a, b)


def test_split_of_a_dataset_and_errors():
    train, test = train_test_split(load_digits("classification"), test_fraction=0.25, seed=3)
    assert train.num_examples + test.num_examples == 1797 and train.num_classes == 10
    assert "train" in train.name and "test" in test.name
    tr, te = train_test_split(load_digits(), seed=3)
    assert tr.Y is tr.X and te.Y is te.X
    X = np.zeros((10, 3))
    with pytest.raises(ConfigurationError, match="strictly between 0 and 1"):
        train_test_split(X, test_fraction=1.0)
    with pytest.raises(ConfigurationError, match="seed"):
        train_test_split(X, seed=-1)
    with pytest.raises(DataError, match="one target per example"):
        train_test_split(X, np.zeros(9))
    with pytest.raises(DataError, match="at least 2"):
        train_test_split(X[:1])
    with pytest.raises(ConfigurationError, match="integer class labels"):
        train_test_split(X, np.zeros((10, 2)), stratify=True)
