"""Limit the threads of the BLAS / OpenMP libraries NumPy and SciPy use, without a dependency.

The small matrices of geomkfac (K-FAC factors of a few hundred rows) gain little from many
BLAS threads, and on a shared machine they lose a lot: the threads of one process wait for
CPUs held by others (100 K-FAC steps on the digits autoencoder: 38.7 s with two threads,
1.6 s with one, on a 2-core machine under a load average of 5).

Two routes, both taken by :func:`limit_blas_threads`:

* the environment variables ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and
  ``MKL_NUM_THREADS``, read by a library when it is loaded: they act on libraries loaded
  later (SciPy's own OpenBLAS, worker processes);
* for libraries already loaded (NumPy's BLAS is loaded with ``import numpy``), their own
  setter called through :mod:`ctypes` (``openblas_set_num_threads`` and its prefixed /
  64-bit-integer variants, ``MKL_Set_Num_Threads``, ``omp_set_num_threads``); the loaded
  libraries are found in ``/proc/self/maps`` (Linux).  Where that file does not exist, the
  optional package ``threadpoolctl`` is used if it is installed; otherwise only the
  environment is set and :func:`limit_blas_threads` says so in its result.

Examples
--------
>>> n = max(blas_threads().values(), default=1)
>>> changed = limit_blas_threads(n, set_environment=False)   # the current number: a no-op
>>> all(v == n for v in blas_threads().values())
True
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

from geomkfac.errors import ConfigurationError

__all__ = ["BLAS_THREAD_VARS", "blas_threads", "max_blas_threads", "limit_blas_threads",
           "single_threaded_blas"]

#: environment variables read by OpenBLAS, OpenMP runtimes and MKL when they are loaded
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_LIB = re.compile(r"(openblas|mkl_rt|libgomp|libiomp|libomp|blis)[^/]*\.(so|dylib|dll)", re.I)

# (setter, getter) symbol names, tried in order on every loaded library
_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
    ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads"),
    ("bli_thread_set_num_threads", "bli_thread_get_num_threads"),
    ("omp_set_num_threads", "omp_get_max_threads"),
)


def _loaded_libraries() -> list[str] | None:
    """Paths of the loaded BLAS / OpenMP libraries (None where they cannot be listed)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    paths = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            path = parts[5].strip()
            if _LIB.search(os.path.basename(path)) and path not in paths:
                paths.append(path)
    return paths


def _controls(path: str):
    """``(setter, getter)`` ctypes functions of one loaded library, or None."""
    try:
        lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
    except OSError:
        return None
    for set_name, get_name in _SYMBOLS:
        setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
        if setter is not None and getter is not None:
            setter.restype, getter.restype = None, ctypes.c_int
            setter.argtypes, getter.argtypes = [ctypes.c_int], []
            return setter, getter
    return None


def blas_threads() -> dict[str, int]:
    """The number of threads of every loaded BLAS / OpenMP library, by file name.

    Returns
    -------
    dict
        ``{file name: threads}``; empty where the libraries cannot be listed (not Linux).

    >>> all(isinstance(v, int) and v >= 1 for v in blas_threads().values())
    True
    """
    out = {}
    for path in _loaded_libraries() or []:
        c = _controls(path)
        if c is not None:
            out[os.path.basename(path)] = int(c[1]())
    return out


# the (setter, getter) pairs of the loaded libraries, listed again when modules were imported
# since (importing is how a new BLAS gets loaded, e.g. SciPy's); None: they cannot be listed
_cached: dict = {"modules": -1, "controls": None}


def _live_controls() -> list | None:
    """``[(setter, getter)]`` of the loaded libraries, cached (see :func:`max_blas_threads`);
    None where they cannot be listed (not Linux)."""
    if _cached["modules"] != len(sys.modules):
        paths = _loaded_libraries()
        found = [c for c in map(_controls, paths or []) if c is not None]
        _cached.update(modules=len(sys.modules), controls=found if paths is not None else None)
    return _cached["controls"]


def max_blas_threads() -> int | None:
    """The largest thread count of the loaded BLAS / OpenMP libraries, ``None`` where they
    cannot be listed (not Linux) or none is loaded.

    Cheap enough for a training step (a few C calls): the libraries are listed once, and
    again only after new modules were imported; the counts themselves are read live, so a
    later :func:`limit_blas_threads` is seen at once.

    >>> n = max_blas_threads()
    >>> n is None or n == max(blas_threads().values())
    True
    """
    controls = _live_controls()
    return max((int(g()) for _, g in controls), default=None) if controls else None


class single_threaded_blas:
    """A context in which every loaded BLAS / OpenMP library runs one thread; on exit each
    gets back the count it had (read live on entry). For code that runs its own threads,
    each calling the BLAS: a multi-threaded BLAS would put its worker threads on the same
    cores (:mod:`geomkfac.nn.parallel`). The counts are the libraries' own, so process-wide:
    BLAS calls of other threads in that time run on one thread too. Cheap (a few C calls, the
    libraries cached as in :func:`max_blas_threads`); where the libraries cannot be listed
    (not Linux) it does nothing.

    >>> with single_threaded_blas():
    ...     inside = max_blas_threads()
    >>> inside in (None, 1)
    True
    """

    def __enter__(self):
        controls = _live_controls() or []
        self._restore = []
        for setter, getter in controls:
            n = int(getter())
            if n > 1:
                setter(1)
                self._restore.append((setter, n))
        return self

    def __exit__(self, *exc):
        for setter, n in self._restore:
            setter(n)
        return False


def limit_blas_threads(n: int, set_environment: bool = True) -> dict[str, int]:
    """Use at most ``n`` threads in the BLAS / OpenMP libraries, loaded now or later.

    Parameters
    ----------
    n : int
        The number of threads, ``n >= 1``.
    set_environment : bool
        Also set ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` to
        ``n`` (for libraries loaded later and for child processes).  Default True.

    Returns
    -------
    dict
        ``{library: threads}`` for the libraries already loaded whose setter was called
        (read back through their getter), or ``{"threadpoolctl": n}`` where that package
        did it; empty when only the environment could be set.

    Raises
    ------
    ConfigurationError
        ``n`` is not a positive integer.

    Examples
    --------
    >>> limit_blas_threads(0)
    Traceback (most recent call last):
    ...
    geomkfac.errors.ConfigurationError: the number of BLAS threads must be a positive integer, got 0
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"the number of BLAS threads must be a positive integer, got {n!r}")
    if set_environment:
        os.environ.update({k: str(n) for k in BLAS_THREAD_VARS})
    paths = _loaded_libraries()
    if paths is None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return {}
        threadpool_limits(n)
        return {"threadpoolctl": n}
    done = {}
    for path in paths:
        c = _controls(path)
        if c is not None:
            c[0](n)
            done[os.path.basename(path)] = int(c[1]())
    return done
