"""Batch-parallel gradient passes: the rows of a batch split over worker threads.

A first-order step (SGD, Adam) needs the mean loss and the gradient
``DW̄_i = (1/N) Σ_n Dz_nᵀ ā_n`` (Eqn. 2.2), sums over the examples. With ``k`` workers the
batch is cut into ``k`` contiguous blocks of rows; each block runs the forward pass, the loss
and the backward pass in its own thread (NumPy and the compiled kernels release the GIL),
and the blocks' sums are added in block order. This is how a step uses several cores where
the BLAS cannot: the weight-gradient GEMMs ``Dzᵀ ā`` are long only in the batch dimension,
which OpenBLAS does not split between its threads, and the elementwise passes (``tanh``, the
loss) run on one core in NumPy. During the parallel section every loaded BLAS runs one thread
(:class:`geomkfac.threads.single_threaded_blas`), else its own worker threads would take the
same cores; it gets its thread count back afterwards.

Measured on the digits autoencoder (64-128-64-32-64-128-64, full batch 1797, float32, two
cores of a virtual machine): in 5-step blocks after idle time the SGD-momentum step took
6.86 ms with one worker and 5.46 ms with two (−23%); in sustained runs
(``benchmarks/batch_workers.py``) the median step 18–27% less, the mean between 28% less and
6% more: a thread woken on the other core sometimes waits milliseconds for it, and the blocks
take turns at the GIL for their Python code. On the deep autoencoder of the benchmarks
(batch 1000, widths up to 1000), whose GEMMs OpenBLAS already runs well on two threads, two
blocks of 500 rows gained 1% (it is not split: 500 is below :data:`MIN_ROWS`).
``benchmarks/README.md`` §6 has the measurements.

The setting is per process: :func:`set_workers` or the environment variable
``GEOMKFAC_WORKERS`` (an integer ``≥ 1``, or ``auto``: the CPUs this process may run on).
The default is **1** (no split): the rounding of the sums depends on the number of blocks,
so a run is reproducible bit for bit only with the same worker count; with the same count it
is, whatever the threads' timing (each block is computed alone, by whichever thread is free,
and the blocks are added in a fixed order). A batch is split only into blocks of at least
:data:`MIN_ROWS` rows.

Which optimizers split: those whose step uses nothing of the pass but the loss and the
gradient (:attr:`geomkfac.nn.optim.base.Optimizer.batch_parallel`: SGD and Adam). K-FAC,
the diagonal Fisher and exact NGD keep the whole batch's activations for their curvature
and run as before.

>>> previous = set_workers(2)
>>> [(s.start, s.stop) for s in row_chunks(1797)]
[(0, 899), (899, 1797)]
>>> row_chunks(1000) is None   # blocks of 500 rows would be below MIN_ROWS
True
>>> _ = set_workers(previous)
"""

from __future__ import annotations

import contextvars
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from geomkfac.errors import ConfigurationError

__all__ = ["ENV_VAR", "MIN_ROWS", "workers", "set_workers", "row_chunks", "run_chunks"]

#: the environment variable read at the first use (and again after ``set_workers(None)``)
ENV_VAR = "GEOMKFAC_WORKERS"

#: the fewest rows of a block. Each block runs the pass's Python code, and the blocks take
#: turns at the GIL for it (≈ 0.35 ms a block on the digits net): on that net (widths ≤ 128,
#: two cores) two blocks took 1.17× the time of one at N = 512, 1.04× at 768, 0.92× at 1024
#: and 0.83× at 1797 (``benchmarks/README.md`` §6)
MIN_ROWS = 512

#: ``choice``: set_workers's setting (None: the environment's); ``env``: the environment's,
#: read once; ``pool``: the worker threads and their count (grown as needed)
_state: dict = {"choice": None, "env": None, "pool": None, "pool_size": 0}
_lock = threading.Lock()


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _parse(value, where: str) -> int:
    n = value
    if isinstance(value, str):
        raw = value.strip().lower()
        if raw == "auto":
            return _usable_cpus()
        try:
            n = int(raw)
        except ValueError:
            n = None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(
            f"{where}: the number of workers must be an integer >= 1 or 'auto', got {value!r}")
    return n


def workers() -> int:
    """The number of worker threads a batch may be split over (1: no split).

    Raises
    ------
    ConfigurationError
        ``GEOMKFAC_WORKERS`` holds something other than a positive integer or ``auto``.
    """
    choice = _state["choice"]
    if choice is not None:
        return choice
    if _state["env"] is None:
        raw = os.environ.get(ENV_VAR, "").strip()
        _state["env"] = _parse(raw, ENV_VAR) if raw else 1
    return _state["env"]


def set_workers(n) -> int | None:
    """Split the batches of SGD and Adam over ``n`` threads (``1``: no split; ``"auto"``: one
    per usable CPU; ``None``: the environment's choice again). Returns the previous setting.

    >>> previous = set_workers("auto")
    >>> workers() >= 1
    True
    >>> _ = set_workers(previous)
    """
    previous = _state["choice"]
    if n is None:
        _state["choice"], _state["env"] = None, None
    else:
        _state["choice"] = _parse(n, "set_workers")
    return previous


def row_chunks(N: int, n_workers: int | None = None) -> list[slice] | None:
    """The blocks of rows of a batch of ``N`` examples: ``min(n_workers, N // MIN_ROWS)``
    contiguous slices of near-equal length, in order; ``None`` where that is fewer than two
    (the batch is not split). ``n_workers`` defaults to :func:`workers`."""
    k = min(workers() if n_workers is None else int(n_workers), N // MIN_ROWS)
    if k < 2:
        return None
    base, extra = divmod(N, k)
    bounds = [0]
    for i in range(k):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _pool(size: int) -> ThreadPoolExecutor:
    """The worker threads, at least ``size`` of them (a pool is replaced only to grow)."""
    with _lock:
        if _state["pool"] is None or _state["pool_size"] < size:
            if _state["pool"] is not None:
                _state["pool"].shutdown(wait=True)
            _state["pool"] = ThreadPoolExecutor(max_workers=size,
                                                thread_name_prefix="geomkfac-rows")
            _state["pool_size"] = size
        return _state["pool"]


def _forget_pool() -> None:
    """After a fork the child has none of the parent's threads: start a new pool there."""
    _state["pool"], _state["pool_size"] = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_chunks(fn, chunks) -> list:
    """``[fn(c) for c in chunks]``, the blocks taken in order by the calling thread and by
    ``workers() - 1`` worker threads at the same time, each in a copy of the caller's context
    (so under its ``np.errstate``). A thread takes the next block not yet taken when it is
    free, so where a worker has not started yet (its CPU busy elsewhere) the caller computes
    that block itself instead of waiting for it; which thread computes a block does not
    change its result. After a block fails no thread starts another; every block started is
    finished before this returns or raises, and the exception of the first block that failed
    is then re-raised.
    """
    n = len(chunks)
    results, errors = [None] * n, [None] * n
    taken = itertools.count()  # next() on it is atomic under the GIL

    def drain():
        for i in iter(taken.__next__, None):
            if i >= n or any(e is not None for e in errors):
                return
            try:
                results[i] = fn(chunks[i])
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others
                errors[i] = exc

    helpers = min(workers(), n) - 1
    # a context variable such as NumPy's error state is per thread: each helper runs in a copy
    # of the caller's context
    futures = ([] if helpers < 1 else
               [_pool(helpers).submit(contextvars.copy_context().run, drain)
                for _ in range(helpers)])
    try:
        drain()
    finally:
        for fut in futures:
            fut.result()
    for exc in errors:
        if exc is not None:
            raise exc
    return results
