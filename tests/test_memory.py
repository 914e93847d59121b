"""geomkfac.memory: glibc keeps freed memory between steps, so a repeated step stops
page-faulting; the default is applied by the first optimizer step and can be switched off.

The settings are process-wide, so every case runs in a fresh interpreter."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from geomkfac.memory import _glibc

glibc = pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc")

# the pattern of a training step: several 1 MiB arrays allocated, written and freed together
# (8 MiB at the top of the heap, above glibc's trim threshold of twice the largest array)
_FAULTS = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from geomkfac import memory
    if sys.argv[1] == "keep":
        memory.keep_freed_memory()
    def step():
        arrays = [np.empty(1 << 18, dtype=np.float32) for _ in range(8)]
        for a in arrays:
            a.fill(1.0)
    for _ in range(5):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps((after - before) / 20))
""")


def _run(code, *args, env=None):
    full_env = {k: v for k, v in os.environ.items() if k != "GEOMKFAC_KEEP_FREED_MEMORY"}
    full_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env=full_env, timeout=120)
    return out


@glibc
def test_kept_memory_removes_the_page_faults_of_a_repeated_step():
    kept = json.loads(_run(_FAULTS, "keep").stdout)
    default = json.loads(_run(_FAULTS, "default").stdout)
    # negative control: glibc's defaults return the 8 MiB each time (2048 pages of 4 KiB)
    assert default > 1000, default
    # kept: the same memory is reused (a few faults at most, e.g. for Python's own objects)
    assert kept < 20, (kept, default)


_DEFAULT = textwrap.dedent("""
    import json
    import numpy as np
    from geomkfac import memory
    from geomkfac.nn import MLP, get_optimizer
    before = memory.current()
    X = np.random.default_rng(0).random((4, 2))
    opt = get_optimizer("sgd", MLP([2, 3, 2], "tanh"), "mse", lr=0.1)
    try:
        opt.step(X, X)
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    else:
        s = memory.current()
        print(json.dumps({"before": before, "keep": s.keep, "applied": s.applied,
                          "detail": s.detail}))
""")


def test_first_step_keeps_freed_memory_by_default():
    r = json.loads(_run(_DEFAULT).stdout)
    assert r["before"] is None
    assert r["keep"] is True
    assert r["applied"] is (_glibc() is not None)


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_environment_switches_the_default_off(value):
    r = json.loads(_run(_DEFAULT, env={"GEOMKFAC_KEEP_FREED_MEMORY": value}).stdout)
    assert (r["keep"], r["applied"]) == (False, False)
    assert "GEOMKFAC_KEEP_FREED_MEMORY" in r["detail"]


def test_unreadable_environment_value_is_a_configuration_error():
    r = json.loads(_run(_DEFAULT, env={"GEOMKFAC_KEEP_FREED_MEMORY": "maybe"}).stdout)
    assert r["error"] == "ConfigurationError"
    assert "set it to 0" in r["message"]


def test_an_explicit_choice_is_left_alone_by_the_default():
    code = textwrap.dedent("""
        import json
        from geomkfac import memory
        memory.keep_freed_memory(False)
        s = memory.ensure_default()
        print(json.dumps([s.keep, memory.current() is s]))
    """)
    assert json.loads(_run(code).stdout) == [False, True]
