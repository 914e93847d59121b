"""Batch-parallel gradient passes (``geomkfac.nn.parallel``): the blocks of rows, the setting,
the worker threads, the single-threaded BLAS around them, and SGD / Adam steps that split
their batch against an independent gradient and against the unsplit step.

The split changes only the order in which the per-example sums are added, so in float64 a
split step agrees with the unsplit one and with ``loss_and_grad`` to rounding: the tolerance
1e-12 (relative) is ~10³ times the rounding of sums of ~10³ terms, and a block counted twice,
dropped, or divided by its own size instead of N is off by O(1).
"""

from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError, NonFiniteError
from geomkfac.nn import MLP, loss_and_grad, parallel
from geomkfac.nn.optim import get_optimizer
from geomkfac.nn.optim.base import Optimizer
from geomkfac.threads import blas_threads, limit_blas_threads, max_blas_threads, single_threaded_blas

N_SPLIT = 2 * parallel.MIN_ROWS + 177  # two blocks of unequal size: 600 and 601 rows


@pytest.fixture
def workers():
    """Set the worker count for one test; the previous setting restored after it."""
    previous = parallel._state["choice"]
    yield parallel.set_workers
    parallel._state["choice"] = previous


@pytest.fixture
def two_blas_threads():
    """Every loaded BLAS at two threads for one test (so that a single-threaded section is
    visible); the counts restored after it."""
    before = blas_threads()
    if not before:
        pytest.skip("the loaded BLAS libraries cannot be listed here")
    limit_blas_threads(2, set_environment=False)
    yield
    for n in set(before.values()):
        limit_blas_threads(n, set_environment=False)


def _problem(N=N_SPLIT, dtype=np.float64, seed=0, sizes=(12, 9, 5, 12)):
    rng = np.random.default_rng(seed)
    X = rng.random((N, sizes[0])).astype(dtype)
    return X, X.copy(), MLP(list(sizes), "tanh", seed=seed, dtype=dtype)


# --------------------------------------------------------------------------- the blocks
@settings(max_examples=200, deadline=None)
@given(N=st.integers(0, 12 * parallel.MIN_ROWS), k=st.integers(1, 9))
def test_row_chunks_partition_the_batch(N, k):
    chunks = parallel.row_chunks(N, k)
    expected = min(k, N // parallel.MIN_ROWS)
    if expected < 2:
        assert chunks is None
        return
    assert len(chunks) == expected
    assert chunks[0].start == 0 and chunks[-1].stop == N
    assert all(a.stop == b.start for a, b in zip(chunks[:-1], chunks[1:]))
    sizes = [c.stop - c.start for c in chunks]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= parallel.MIN_ROWS
    assert all(c.step is None for c in chunks)


def test_row_chunks_default_to_the_setting(workers):
    workers(3)
    assert len(parallel.row_chunks(10 * parallel.MIN_ROWS)) == 3
    workers(1)
    assert parallel.row_chunks(10 * parallel.MIN_ROWS) is None


# --------------------------------------------------------------------------- the setting
def test_set_workers_values_and_errors(workers):
    workers(4)
    assert parallel.workers() == 4
    assert workers(2) == 4  # the previous setting is returned
    workers("auto")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert parallel.workers() == cpus
    for bad in (0, -1, 1.5, True, "two", "", "0"):
        with pytest.raises(ConfigurationError, match="integer >= 1 or 'auto'"):
            workers(bad)
    assert parallel.workers() == cpus  # a refused value changes nothing


def test_environment_variable(workers, monkeypatch):
    monkeypatch.setenv(parallel.ENV_VAR, "3")
    workers(None)  # back to the environment, read again
    assert parallel.workers() == 3
    monkeypatch.setenv(parallel.ENV_VAR, "many")
    workers(None)
    with pytest.raises(ConfigurationError, match="GEOMKFAC_WORKERS: .* got 'many'"):
        parallel.workers()
    monkeypatch.delenv(parallel.ENV_VAR)
    workers(None)
    assert parallel.workers() == 1  # the default: no split


# --------------------------------------------------------------------------- the threads
def test_run_chunks_order_and_threads(workers):
    """With three workers three blocks run at the same time: each waits at a barrier for the
    others (a thread taking two blocks would wait there forever)."""
    workers(3)
    seen, barrier = {}, threading.Barrier(3, timeout=10)

    def fn(c):
        seen[c] = threading.get_ident()
        barrier.wait()
        return c * 10

    assert parallel.run_chunks(fn, [0, 1, 2]) == [0, 10, 20]
    assert threading.get_ident() in seen.values()  # the caller takes a block too
    assert len(set(seen.values())) == 3


def test_run_chunks_caller_takes_the_blocks_no_worker_started(workers, monkeypatch):
    """Where the workers do not start (their CPU busy elsewhere), the caller computes every
    block instead of waiting: here the helpers are held until the caller has finished."""
    workers(2)
    gate = threading.Event()
    pool_submit = parallel._pool(1).submit

    def late_submit(fn, *args):
        def held():
            gate.wait(10)
            return fn(*args)
        return pool_submit(held)

    monkeypatch.setattr(parallel._pool(1), "submit", late_submit)
    seen = []

    def fn(c):
        seen.append(threading.get_ident())
        if c == 2:
            gate.set()  # the caller has reached the last block: let the helper start now
        return c

    assert parallel.run_chunks(fn, [0, 1, 2]) == [0, 1, 2]
    assert seen == [threading.get_ident()] * 3


def test_run_chunks_keep_the_callers_error_state():
    """NumPy's error state is a context variable: the worker's block runs under the caller's."""
    with np.errstate(over="raise"):
        assert parallel.run_chunks(lambda c: np.geterr()["over"], [0, 1]) == ["raise", "raise"]
    with np.errstate(over="ignore"):
        assert parallel.run_chunks(lambda c: np.geterr()["over"], [0, 1]) == ["ignore", "ignore"]


@pytest.mark.parametrize("failing", [0, 1])
def test_run_chunks_raises_after_every_block_finished(workers, failing):
    """The failing block waits until the other has started, then fails while the other still
    runs: the error comes out only after the other block has finished."""
    finished, started, release = [], threading.Event(), threading.Event()

    def fn(c):
        if c == failing:
            assert started.wait(10), "the other block did not start"
            raise ValueError(f"block {c}")
        started.set()
        release.wait(5)  # the other block is still running when the failure happens
        finished.append(c)
        return c

    workers(2)
    timer = threading.Timer(0.2, release.set)
    timer.start()
    with pytest.raises(ValueError, match=f"block {failing}"):
        parallel.run_chunks(fn, [0, 1])
    timer.cancel()
    assert finished == [1 - failing]  # the other block ended before the error came out


def test_run_chunks_start_no_block_after_a_failure():
    """One thread: block 0 fails, blocks 1 and 2 are never started (an interrupted step
    does not go on computing)."""
    started = []

    def fn(c):
        started.append(c)
        raise KeyboardInterrupt if c == 0 else AssertionError("started after the failure")

    with pytest.raises(KeyboardInterrupt):
        parallel.run_chunks(fn, [0, 1, 2])
    assert started == [0]


def _split_in_child(conn):
    try:
        parallel.set_workers(2)
        conn.send(parallel.run_chunks(lambda c: c + 1, [1, 2]))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        conn.send(repr(exc))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_worker_threads_after_fork():
    """A forked child has none of the parent's threads: its pool is made anew (else the
    child's first split would wait forever)."""
    parallel.run_chunks(lambda c: c, [0, 1])  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_split_in_child, args=(send,))
    p.start()
    assert recv.poll(30), "the child's split did not finish"
    assert recv.recv() == [2, 3]
    p.join(10)


def test_single_threaded_blas_sets_and_restores(two_blas_threads):
    assert max_blas_threads() == 2
    with single_threaded_blas():
        assert max_blas_threads() == 1
    assert max_blas_threads() == 2
    with pytest.raises(RuntimeError), single_threaded_blas():
        raise RuntimeError
    assert max_blas_threads() == 2


def test_single_threaded_blas_read_back_by_threadpoolctl(two_blas_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with single_threaded_blas():
        inside = [d["num_threads"] for d in threadpoolctl.threadpool_info()
                  if d["user_api"] == "blas"]
    assert inside and all(n == 1 for n in inside)


# --------------------------------------------------------------------------- the steps
class _Spy:
    """Records, for every ``_pass_sums`` call, its rows, thread and the BLAS thread count."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = Optimizer._pass_sums
        spy = self

        def recorded(opt, X, Y):
            spy.calls.append((X.shape[0], threading.get_ident(), max_blas_threads()))
            return original(opt, X, Y)

        monkeypatch.setattr(Optimizer, "_pass_sums", recorded)


def test_split_gradient_against_loss_and_grad(workers, monkeypatch, two_blas_threads):
    """The split pass's loss and gradient against ``loss_and_grad`` (the curvature module's
    own forward/backward over the whole batch): two routes."""
    X, Y, net = _problem()
    value, grad = loss_and_grad(net, X, Y, "bernoulli")
    workers(2)
    spy = _Spy(monkeypatch)
    opt = get_optimizer("sgd", net, "bernoulli", lr=0.1)
    loss, grads, f, cache, Dz = opt._forward_backward(*opt._prepare(X, Y))
    assert sorted(c[0] for c in spy.calls) == [N_SPLIT // 2, N_SPLIT // 2 + 1]
    assert all(c[2] == 1 for c in spy.calls)  # each block with a single-threaded BLAS
    assert max_blas_threads() == 2  # given back
    assert f is None and cache is None and Dz is None
    flat = np.concatenate([g.reshape(-1, order="F") for g in grads])
    np.testing.assert_allclose(flat, grad, rtol=1e-12, atol=1e-14 * np.abs(grad).max())
    assert loss == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(opt._grad_norm(grads), np.linalg.norm(grad), rtol=1e-12)


@pytest.mark.parametrize("name, hyper", [("sgd", {"lr": 0.2, "momentum": 0.9}),
                                         ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True,
                                                  "weight_decay": 1e-3}),
                                         ("adam", {"lr": 1e-2})])
def test_split_run_matches_unsplit_run(workers, name, hyper):
    def run(k):
        workers(k)
        X, Y, net = _problem()
        opt = get_optimizer(name, net, "bernoulli", **hyper)
        losses = [opt.step(X, Y).loss for _ in range(6)]
        return losses, net.get_Wbars()

    (l1, W1), (l2, W2), (l2b, W2b) = run(1), run(2), run(2)
    np.testing.assert_allclose(l2, l1, rtol=1e-12)
    for a, b in zip(W2, W1):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    assert l2 != l1 or any(not np.array_equal(a, b) for a, b in zip(W2, W1)), \
        "the split run gave the unsplit bits: was the batch split at all?"
    # the same worker count: the same bits, whatever the threads' timing
    assert l2b == l2 and all(np.array_equal(a, b) for a, b in zip(W2b, W2))


@pytest.mark.parametrize("kind", ["cnn", "rnn"])
def test_split_layer_models(workers, kind):
    """A CNN (images ``(N, 1, 8, 8)``) and an RNN (sequences ``(N, 5, 2)``, a label per step)
    split along their examples: the gradient against ``loss_and_grad``, the run against the
    unsplit run."""
    from test_optim_layers import problem

    net, X, Y = problem(kind, N=N_SPLIT)
    value, grad = loss_and_grad(net, X, Y, "softmax_ce")
    workers(2)
    opt = get_optimizer("sgd", net, "softmax_ce", lr=0.1, momentum=0.9)
    loss, grads, *_ = opt._forward_backward(*opt._prepare(X, Y))
    np.testing.assert_allclose(np.concatenate([g.reshape(-1, order="F") for g in grads]), grad,
                               rtol=1e-12, atol=1e-14 * np.abs(grad).max())
    assert loss == pytest.approx(value, rel=1e-12)

    def run(k):
        workers(k)
        net, X, Y = problem(kind, N=N_SPLIT)
        opt = get_optimizer("sgd", net, "softmax_ce", lr=0.1, momentum=0.9)
        return [opt.step(X, Y).loss for _ in range(3)], net.get_flat()

    (l1, t1), (l2, t2) = run(1), run(2)
    np.testing.assert_allclose(l2, l1, rtol=1e-12)
    np.testing.assert_allclose(t2, t1, rtol=1e-11, atol=1e-13)


def test_float32_split_step(workers):
    def run(k):
        workers(k)
        X, Y, net = _problem(dtype=np.float32)
        opt = get_optimizer("sgd", net, "bernoulli", lr=0.2, momentum=0.9)
        return [opt.step(X, Y).loss for _ in range(4)], net.get_Wbars()

    (l1, W1), (l2, W2) = run(1), run(2)
    assert all(W.dtype == np.float32 for W in W2)
    np.testing.assert_allclose(l2, l1, rtol=1e-5)  # float32 sums of ~10³ terms
    for a, b in zip(W2, W1):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_small_batches_and_curvature_optimizers_are_not_split(workers, monkeypatch):
    """Below two blocks of MIN_ROWS, and for K-FAC (which keeps the activations), the step
    is the unsplit one, bit for bit."""
    def run(k, name, N):
        workers(k)
        X, Y, net = _problem(N=N)
        opt = get_optimizer(name, net, "bernoulli", lr=0.05)
        return [opt.step(X, Y).loss for _ in range(3)], net.get_Wbars()

    spy = _Spy(monkeypatch)
    for name, N in (("sgd", 2 * parallel.MIN_ROWS - 1), ("kfac", N_SPLIT)):
        spy.calls.clear()
        (l1, W1), (l2, W2) = run(1, name, N), run(2, name, N)
        assert l1 == l2 and all(np.array_equal(a, b) for a, b in zip(W1, W2))
        assert all(c[0] == N for c in spy.calls) and len(spy.calls) >= 6


def test_a_failing_block_leaves_the_model_unchanged(workers, monkeypatch):
    """A non-finite loss in the second block (whichever thread takes it): NonFiniteError,
    and neither the weights nor the velocity moved."""
    workers(2)
    X, Y, net = _problem()
    opt = get_optimizer("sgd", net, "bernoulli", lr=0.1, momentum=0.9)
    opt.step(X, Y)
    before, velocity = net.get_Wbars(), [v.copy() for v in opt.velocity]
    loss_fn = opt.loss_fn
    original = type(loss_fn)._value_and_grad

    def poisoned(self, f, Y):
        value, g = original(self, f, Y)
        return (np.nan if f.shape[0] == N_SPLIT // 2 else value), g  # the second block

    monkeypatch.setattr(type(loss_fn), "_value_and_grad", poisoned)
    with pytest.raises(NonFiniteError, match="the loss is not finite"):
        opt.step(X, Y)
    assert all(np.array_equal(a, b) for a, b in zip(net.get_Wbars(), before))
    assert all(np.array_equal(a, b) for a, b in zip(opt.velocity, velocity))
    monkeypatch.undo()
    workers(2)
    opt.step(X, Y)  # and the next step runs


def test_cli_workers_split_the_batches(workers, monkeypatch, tmp_path, capsys):
    """``geomkfac train --workers 2``: SGD's batch of 1100 rows runs as two blocks; the
    epoch's last batch, the remaining 697 of the 1797 digits, is below two blocks of
    MIN_ROWS and runs whole."""
    from geomkfac.cli import main

    spy = _Spy(monkeypatch)
    rc = main(["train", "--no-progress", "--arch", "64-16-64", "--optimizer", "sgd",
               "--steps", "2", "--batch-size", "1100", "--workers", "2", "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    assert parallel.workers() == 2
    assert sorted(c[0] for c in spy.calls) == [550, 550, 697]
