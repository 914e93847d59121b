"""Atomic checkpoints: exact round trips of state trees, survival of failed or killed writes,
clear errors for corrupt or missing files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import geomkfac.nn.checkpoint as ckmod
from geomkfac.errors import CheckpointError
from geomkfac.nn.checkpoint import atomic_write, load_checkpoint, save_checkpoint


class _Weights:
    """The part of the model API a checkpoint needs: get_Wbars / set_Wbars / dtype."""

    def __init__(self, shapes, seed=0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.Wbars = [rng.standard_normal(s).astype(dtype) for s in shapes]

    def get_Wbars(self):
        return [W.copy() for W in self.Wbars]

    def set_Wbars(self, Wbars):
        self.Wbars = [np.array(W, dtype=self.dtype) for W in Wbars]


class _State:
    def __init__(self, d):
        self.d = d
        self.loaded = None

    def state_dict(self):
        return self.d

    def load_state_dict(self, d):
        self.loaded = d


def _tree():
    rng = np.random.default_rng(5)
    return {
        "step": 17,
        "lr": 0.1 + 1e-17,  # a float whose shortest repr matters
        "big": 2**100 + 3,  # RNG states hold 128-bit integers
        "inf": float("inf"),
        "nan": float("nan"),
        "flag": True,
        "none": None,
        "name": "kfac",
        "f32": np.float32(1.5),
        "i64": np.int64(-4),
        "zero_d": np.array(2.5),
        "factors": [(rng.standard_normal((3, 3)), rng.standard_normal((2, 2)).astype(np.float32))],
        "nested": {"rng": np.random.default_rng(3).bit_generator.state, "empty": [], "t": ()},
    }


def _assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bit for bit
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    else:
        assert a == b


def test_round_trip_is_exact(tmp_path):
    model = _Weights([(4, 3), (2, 5)])
    tree = _tree()
    p = tmp_path / "c.npz"
    save_checkpoint(p, model, _State(tree), _State({"epoch": 2, "position": 30}), step=17,
                    config={"arch": [2, 4, 2], "lr": 0.1}, extra={"seconds": 1.25})
    ck = load_checkpoint(p)
    assert ck.step == 17 and ck.config == {"arch": [2, 4, 2], "lr": 0.1}
    assert ck.extra == {"seconds": 1.25}
    _assert_same(tree, ck.optimizer_state)
    _assert_same({"epoch": 2, "position": 30}, ck.iterator_state)
    # the decoded RNG state drives a generator to the same numbers
    g = np.random.default_rng()
    g.bit_generator.state = ck.optimizer_state["nested"]["rng"]
    assert g.random() == np.random.default_rng(3).random()
    # and restore() puts the weights back bit for bit
    fresh = _Weights([(4, 3), (2, 5)], seed=99)
    opt, it = _State(None), _State(None)
    assert ck.restore(fresh, opt, it) == 17
    assert all(a.tobytes() == b.tobytes() for a, b in zip(fresh.Wbars, model.Wbars))
    assert it.loaded == {"epoch": 2, "position": 30}


def test_restore_rejects_other_architecture(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, _Weights([(4, 3)]), step=1)
    with pytest.raises(CheckpointError, match="resume with the same architecture"):
        load_checkpoint(p).restore(_Weights([(4, 4)]))
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(p).restore(_Weights([(4, 3)]), _State(None))


def test_unsupported_state_is_refused_before_writing(tmp_path):
    p = tmp_path / "c.npz"
    with pytest.raises(CheckpointError, match=r"state\['optimizer'\]\['f'\]: unsupported type"):
        save_checkpoint(p, _Weights([(2, 2)]), _State({"f": object()}))
    with pytest.raises(CheckpointError, match="dtype object"):
        save_checkpoint(p, _Weights([(2, 2)]), _State({"f": np.array([object()])}))
    assert not p.exists()


def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    """An error half-way through writing leaves the old file intact and no temp files."""
    p = tmp_path / "c.npz"
    old = _Weights([(3, 3)], seed=1)
    save_checkpoint(p, old, step=5)
    before = p.read_bytes()

    def half_then_fail(fh, arrays):
        fh.write(b"PK\x03\x04 half a zip archive")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckmod, "_write_npz", half_then_fail)
    with pytest.raises(CheckpointError, match="could not write checkpoint.*disk full"):
        save_checkpoint(p, _Weights([(3, 3)], seed=2), step=6)
    monkeypatch.undo()
    assert p.read_bytes() == before
    ck = load_checkpoint(p)
    assert ck.step == 5 and np.array_equal(ck.Wbars[0], old.Wbars[0])
    assert os.listdir(tmp_path) == ["c.npz"]


def test_killed_write_keeps_old_checkpoint(tmp_path):
    """A process killed mid-write (os._exit: no cleanup at all) leaves the old checkpoint."""
    p = tmp_path / "c.npz"
    save_checkpoint(p, _Weights([(3, 2)], seed=1), step=3)
    before = p.read_bytes()
    script = textwrap.dedent(f"""
        import os, numpy as np
        import geomkfac.nn.checkpoint as ck
        def die(fh, arrays):
            fh.write(b"PK\\x03\\x04 partial"); fh.flush()
            os._exit(9)
        ck._write_npz = die
        class M:
            def get_Wbars(self): return [np.zeros((3, 2))]
        ck.save_checkpoint({str(p)!r}, M(), step=4)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr.decode()
    assert p.read_bytes() == before
    assert load_checkpoint(p).step == 3
    leftovers = [f for f in os.listdir(tmp_path) if f != "c.npz"]
    assert leftovers and all(f.startswith(".c.npz.") for f in leftovers)  # the killed temp file


def test_negative_control_plain_write_is_not_atomic(tmp_path):
    """Writing in place (what atomic_write avoids) does destroy the old file on failure."""
    p = tmp_path / "c.npz"
    save_checkpoint(p, _Weights([(3, 3)]), step=1)
    try:
        with open(p, "wb") as fh:
            fh.write(b"PK\x03\x04 half")
            raise OSError("simulated")
    except OSError:
        pass
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(p)


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "f"
    atomic_write(p, lambda fh: fh.write(b"first, long content"))
    atomic_write(p, lambda fh: fh.write(b"second"))
    assert p.read_bytes() == b"second"


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.npz: no such checkpoint"):
        load_checkpoint(tmp_path / "nope.npz")
    p = tmp_path / "c.npz"
    save_checkpoint(p, _Weights([(3, 3)]), _State({"a": np.arange(1000.0)}), step=2)
    good = p.read_bytes()
    p.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(CheckpointError, match=r"c\.npz: corrupt or unreadable checkpoint"):
        load_checkpoint(p)
    p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(p)
    np.savez(p, X=np.zeros(3))  # a valid npz, but not a checkpoint
    with pytest.raises(CheckpointError, match="not a geomkfac checkpoint"):
        load_checkpoint(p)
    # a checkpoint from a future format version
    p.write_bytes(good)
    with np.load(p) as d:
        arrays = {k: d[k] for k in d.files}
    meta = json.loads(str(arrays["__meta__"]))
    meta["format_version"] = 999
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(p, **arrays)
    with pytest.raises(CheckpointError, match="format 999 is not supported"):
        load_checkpoint(p)
    # a member's bytes flipped inside the zip: detected by the zip CRC or the parser
    p.write_bytes(good)
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("model/Wbar_0.npy")
    raw = bytearray(good)
    h = info.header_offset  # local header: 30 bytes, then name and extra field, then data
    data_start = h + 30 + int.from_bytes(raw[h + 26:h + 28], "little") \
        + int.from_bytes(raw[h + 28:h + 30], "little")
    raw[data_start + info.file_size - 8] ^= 0xFF  # inside the last float of W̄_0
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(p)
