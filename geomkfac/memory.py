"""Keep freed memory in the process between training steps (glibc's ``mallopt``).

A training step allocates the same arrays every time: the layers' inputs ``[a 1]``, the
pre-activations, the backpropagated gradients, the weight gradients. With glibc's default
settings the memory of a step's arrays goes back to the operating system when they are freed
(the top of the heap is trimmed above 128 KiB, or twice the largest array freed so far), and
the next step takes it back one page fault per 4 KiB page. On a virtual machine a page fault
costs microseconds: on the digits autoencoder (64-128-64-32-64-128-64, full batch 1797,
float32) an SGD step took 17–18 ms with 3,240 page faults, and 8–9 ms with none, on two
cores (``benchmarks/README.md`` §6). JAX and PyTorch avoid this with caching allocators of
their own; NumPy allocates through ``malloc``, so geomkfac asks glibc to keep the memory:

* ``M_TRIM_THRESHOLD`` = 1 GiB: the free memory at the top of the heap is returned to the
  system only above 1 GiB;
* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's largest on 64-bit): arrays up to 32 MiB come from
  the heap, whose freed memory is reused, instead of a fresh ``mmap`` each.

The first optimizer step of a process does this (:func:`ensure_default`, called by
:meth:`geomkfac.nn.optim.base.Optimizer.step`) unless the environment variable
``GEOMKFAC_KEEP_FREED_MEMORY`` is ``0`` (or ``false`` / ``no`` / ``off``) or
:func:`keep_freed_memory` was called before. The cost: the process keeps up to its peak heap
(plus at most 1 GiB of trimmable top) instead of shrinking after a large computation, as with
any caching allocator. The settings are process-wide; where the C library is not glibc
(macOS, Windows, musl) nothing is changed and the result says so.

Examples
--------
>>> settings = keep_freed_memory()
>>> settings.keep
True
>>> settings.applied == settings.allocator.startswith("glibc")
True
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from geomkfac.errors import ConfigurationError

__all__ = ["AllocatorSettings", "keep_freed_memory", "ensure_default", "current", "ENV_VAR"]

#: the environment variable that switches the default off (``0``, ``false``, ``no``, ``off``)
ENV_VAR = "GEOMKFAC_KEEP_FREED_MEMORY"

# mallopt parameters (malloc.h) and the values set
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 1 << 30
MMAP_THRESHOLD = 32 << 20
#: glibc's own defaults (restored by ``keep_freed_memory(False)``, without its dynamic rule)
DEFAULT_THRESHOLD = 128 << 10

_OFF, _ON = ("0", "false", "no", "off"), ("", "1", "true", "yes", "on")


@dataclass(frozen=True)
class AllocatorSettings:
    """What :func:`keep_freed_memory` did.

    Attributes
    ----------
    keep : bool
        The setting asked for: keep freed memory (True) or glibc's defaults (False).
    applied : bool
        Whether the C library took it (glibc only).
    allocator : str
        ``"glibc <version>"``, or ``"unknown"`` where it is not glibc.
    detail : str
        The thresholds set, or why nothing was changed.
    """

    keep: bool
    applied: bool
    allocator: str
    detail: str


_current: AllocatorSettings | None = None


def _glibc():
    """``(mallopt, version)`` of the process's glibc, or ``None``."""
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    mallopt.restype, mallopt.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
    return mallopt, version().decode()


def keep_freed_memory(keep: bool = True) -> AllocatorSettings:
    """Ask glibc to keep freed memory for reuse (``keep=True``) or restore its default
    thresholds (``keep=False``); process-wide, see the module docstring.

    Parameters
    ----------
    keep : bool
        Default True.

    Returns
    -------
    AllocatorSettings
        Also returned by :func:`current` from now on; :func:`ensure_default` leaves an
        explicit choice alone.

    >>> keep_freed_memory(False).keep, keep_freed_memory(True).keep
    (False, True)
    """
    global _current
    keep = bool(keep)
    lib = _glibc()
    if lib is None:
        _current = AllocatorSettings(keep, False, "unknown",
                                     "not glibc: the C library's allocator was left as it is")
        return _current
    mallopt, version = lib
    trim, mmap = (TRIM_THRESHOLD, MMAP_THRESHOLD) if keep else (DEFAULT_THRESHOLD, DEFAULT_THRESHOLD)
    ok = bool(mallopt(_M_TRIM_THRESHOLD, trim)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap))
    detail = (f"M_TRIM_THRESHOLD={trim}, M_MMAP_THRESHOLD={mmap}" if ok
              else "glibc refused the thresholds (mallopt returned 0)")
    _current = AllocatorSettings(keep, ok, f"glibc {version}", detail)
    return _current


def current() -> AllocatorSettings | None:
    """The settings made in this process so far (``None`` before the first)."""
    return _current


def ensure_default() -> AllocatorSettings:
    """Apply the default once per process: keep freed memory unless :data:`ENV_VAR` says
    ``0`` / ``false`` / ``no`` / ``off``; a setting already made is left alone.

    Raises
    ------
    ConfigurationError
        :data:`ENV_VAR` holds something else than those words or ``1`` / ``true`` / ``yes``
        / ``on``.
    """
    global _current
    if _current is not None:
        return _current
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value not in _OFF + _ON:
        raise ConfigurationError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not understood; set it to 0 to leave the "
            "memory allocator alone, or 1 (the default) to keep freed memory between steps"
        )
    if value in _OFF:
        _current = AllocatorSettings(False, False, "not changed",
                                     f"left alone: {ENV_VAR}={os.environ[ENV_VAR]}")
        return _current
    return keep_freed_memory(True)
