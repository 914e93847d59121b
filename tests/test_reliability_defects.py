"""One test per reliability defect found by trying the public API as a careless user would
(each reproduces the original report; the numbers follow the report's list).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import sympy as sp

import fuzzing
import geomkfac.nn as gnn
from geomkfac.activations_sym import ConjugatedActivation as SymConjugated
from geomkfac.errors import (
    CheckpointError,
    ConfigurationError,
    DataError,
    FieldMismatchError,
    GeomKFACError,
    NonFiniteError,
    NotSymmetricError,
    SingularFrameChangeError,
)
from geomkfac.fields import SYMBOLIC
from geomkfac.nn.checkpoint import load_checkpoint, previous_path, save_checkpoint
from geomkfac.nn.data import BatchIterator, load_idx, load_npz, make_dataset
from geomkfac.nn.optim import get_optimizer
from geomkfac.nn.train import MetricsWriter, read_metrics, train
from geomkfac.reparam import random_affine, whitening
from geomkfac.spaces import AffineSpace, Covector, Point

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=20, d=3, seed=0):
    return make_dataset(np.random.default_rng(seed).random((n, d)), task="autoencoder")


def _run(tmp_path, steps, resume=False, metrics="m.csv", checkpoint_every=2, name="adam"):
    model = gnn.MLP([3, 4, 3], "tanh", seed=0)
    opt = get_optimizer(name, model, "mse")
    res = train(model, opt, _data(), steps=steps, batch_size=6, metrics_path=tmp_path / metrics,
                checkpoint_path=tmp_path / "c.npz", checkpoint_every=checkpoint_every,
                resume=resume)
    return res, model


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write_members(path, members, fix_checksum):
    if fix_checksum:  # an edit a checksum cannot see: only structural validation can
        from geomkfac.nn.checkpoint import _digest

        members["__checksum__.npy"] = fuzzing.json_member(_digest(members))
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)


# --------------------------------------------------------------------------- 1, 2: damaged files


def test_1_corrupt_gzip_idx_is_a_data_error(tmp_path):
    p = tmp_path / "i.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 40)  # a gzip header, then garbage
    with pytest.raises(DataError, match=r"i\.gz: corrupt gzip stream"):
        load_idx(p)


def test_1_corrupt_deflate_stream_in_npz_is_a_data_error(tmp_path):
    p = tmp_path / "d.npz"
    np.savez_compressed(p, X=np.random.default_rng(0).random((200, 8)))
    raw = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("X.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 20, start + 60):
        raw[i] ^= 0x5A
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(p)


def _break_npy_header(path):
    """Replace the '}' closing the header of the first .npy member (>= 4 KiB) by '['."""
    raw = bytearray(path.read_bytes())
    i = raw.index(b"'shape'")
    j = raw.index(b"}", i)
    raw[j:j + 1] = b"["
    path.write_bytes(bytes(raw))


def test_2_broken_npy_header_in_npz(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, X=np.zeros((40, 20)))  # 6.4 KB member, stored: the header is plain text
    _break_npy_header(p)
    with pytest.raises(DataError, match=r"d\.npz: not a readable \.npz"):
        load_npz(p)


def test_2_broken_npy_header_in_checkpoint(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, gnn.MLP([40, 20, 2], seed=0), step=1)
    _break_npy_header(p)
    with pytest.raises(CheckpointError, match=r"c\.npz: corrupt"):
        load_checkpoint(p)


def test_2_broken_npy_header_in_shaped_npz(tmp_path):
    from geomkfac.nn.shaped import load_shaped_npz

    p = tmp_path / "d.npz"
    np.savez(p, X=np.zeros((40, 20)), Y=np.zeros(40, dtype=int))
    _break_npy_header(p)
    with pytest.raises(DataError):
        load_shaped_npz(p)


# --------------------------------------------------------------------------- 3, 4: checkpoints


@pytest.mark.parametrize("fix_checksum", [False, True])
@pytest.mark.parametrize("member,text", [("__schema__.npy", "7"), ("__meta__.npy", "[]"),
                                         ("__meta__.npy", '{"format_version": 2}')])
def test_3_malformed_meta_or_schema(tmp_path, member, text, fix_checksum):
    _run(tmp_path, 4)
    p = tmp_path / "c.npz"
    members = _members(p)
    members[member] = fuzzing.json_member(text)
    _write_members(p, members, fix_checksum)
    with pytest.raises(CheckpointError, match=r"c\.npz: corrupt checkpoint"):
        _run(tmp_path, 6, resume=True)


@pytest.mark.parametrize("change", ["dtype", "shape"])
def test_3_state_array_of_wrong_dtype_or_shape(tmp_path, change):
    _run(tmp_path, 4)
    p = tmp_path / "c.npz"
    members = _members(p)
    name = max((m for m in members if m.startswith("state/")),
               key=lambda m: np.lib.format.read_array(io.BytesIO(members[m])).size)
    arr = np.lib.format.read_array(io.BytesIO(members[name]))
    arr = arr.astype(np.float32) if change == "dtype" else arr[..., :-1]
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr)
    members[name] = buf.getvalue()
    _write_members(p, members, fix_checksum=True)
    with pytest.raises(CheckpointError, match=f"c\\.npz: .*{change}"):
        _run(tmp_path, 6, resume=True)


@pytest.mark.parametrize("step", [-1, 3, 5])
def test_4_step_counter_must_agree_with_the_states(tmp_path, step):
    _run(tmp_path, 4)
    p = tmp_path / "c.npz"
    members = _members(p)
    meta = json.loads(str(np.lib.format.read_array(io.BytesIO(members["__meta__.npy"]))))
    meta["step"] = step
    members["__meta__.npy"] = fuzzing.json_member(json.dumps(meta))
    _write_members(p, members, fix_checksum=True)
    with pytest.raises(CheckpointError, match=r"c\.npz: (corrupt|inconsistent) checkpoint"):
        _run(tmp_path, 6, resume=True)


def test_4_one_ulp_edit_of_a_weight_is_detected_and_the_earlier_checkpoint_named(tmp_path):
    _run(tmp_path, 4)  # checkpoints at 2 and 4: the one of step 2 is kept as .prev
    p = tmp_path / "c.npz"
    original = p.read_bytes()
    with np.load(p) as d:
        arrays = {k: d[k] for k in d.files}
    W = arrays["model/Wbar_0"]
    W.reshape(-1)[3] = np.nextafter(W.reshape(-1)[3], np.inf)
    np.savez(p, **arrays)  # a well-formed archive with the old checksum
    with pytest.raises(CheckpointError) as info:
        _run(tmp_path, 6, resume=True)
    msg = str(info.value)
    assert "c.npz: corrupt checkpoint, its SHA-256 checksum does not match" in msg
    assert f"an earlier good checkpoint (step 2) is {previous_path(p)}" in msg
    # negative control: the unedited file loads (the edit, not the loader, is refused)
    p.write_bytes(original)
    assert load_checkpoint(p).step == 4


def test_4_resume_from_the_earlier_checkpoint_continues_exactly(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, ref_model = _run(tmp_path / "a", 6)
    _run(tmp_path / "b", 4)
    p = tmp_path / "b" / "c.npz"
    p.write_bytes(p.read_bytes()[:-50])  # damaged: the message points to .prev (step 2)
    with pytest.raises(CheckpointError, match="earlier good checkpoint"):
        _run(tmp_path / "b", 6, resume=True)
    os.replace(previous_path(p), p)
    res, model = _run(tmp_path / "b", 6, resume=True)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(model.get_Wbars(), ref_model.get_Wbars()))


# --------------------------------------------------------------------------- 5: load_state_dict


def test_5_load_state_dict_checks_its_argument():
    opt = get_optimizer("adam", gnn.MLP([4, 3, 2], seed=0), "mse")
    with pytest.raises(CheckpointError, match="must be a dict"):
        opt.load_state_dict(5)


@pytest.mark.parametrize("name", ["sgd", "adam", "diag_fisher", "ngd", "kfac", "ekfac"])
def test_5_state_of_another_architecture_is_refused(name):
    kw = {"momentum": 0.9} if name == "sgd" else {}
    X = np.random.default_rng(0).random((8, 4))
    src = get_optimizer(name, gnn.MLP([4, 5, 2], seed=0), "mse", **kw)
    src.step(X, X[:, :2])
    state = src.state_dict()
    dst = get_optimizer(name, gnn.MLP([4, 3, 2], seed=0), "mse", **kw)
    before = dst.state_dict()
    with pytest.raises(CheckpointError, match="same architecture"):
        dst.load_state_dict(state)
    assert dst.state_dict().keys() == before.keys() and dst.step_count == 0  # untouched
    # negative control: the same architecture takes it and steps on
    same = get_optimizer(name, gnn.MLP([4, 5, 2], seed=0), "mse", **kw)
    same.load_state_dict(state)
    assert np.isfinite(same.step(X, X[:, :2]).loss)


def test_5_bad_entries_are_named():
    opt = get_optimizer("kfac", gnn.MLP([4, 3, 2], seed=0), "mse")
    good = opt.state_dict()
    for edit, pattern in [({"step": -3}, "step counter must be >= 0"), ({"damping": float("nan")}, "not finite"),
                          ({"rng": np.zeros(6)}, "dtype"), ({"extra_key": 1}, "unexpected extra_key"),
                          ({"name": "adam"}, "is for 'adam'"), ({"A.n": 7}, "A has 7 entries|per-layer")]:
        with pytest.raises(CheckpointError, match=pattern):
            opt.load_state_dict({**good, **edit})
    missing = dict(good)
    del missing["damping"]
    with pytest.raises(CheckpointError, match="missing damping"):
        opt.load_state_dict(missing)


# --------------------------------------------------------------------------- 6: metrics files


@pytest.mark.parametrize("fmt,torn", [("jsonl", '{"step": 13, "epoch": 3, "lo'),
                                      ("csv", "13,3,0.12"),
                                      ("csv", "1")])  # reads as step 1 <= 12: was kept and merged
def test_6_torn_last_metrics_line_is_dropped_on_resume(tmp_path, fmt, torn):
    (tmp_path / "ref").mkdir()
    (tmp_path / "run").mkdir()
    _run(tmp_path / "ref", 16, metrics=f"m.{fmt}")
    _run(tmp_path / "run", 12, metrics=f"m.{fmt}")
    m = tmp_path / "run" / f"m.{fmt}"
    with open(m, "a") as fh:
        fh.write(torn)  # killed in the middle of writing the record of step 13
    _run(tmp_path / "run", 16, resume=True, metrics=f"m.{fmt}")
    text = m.read_text()
    lines = text.splitlines()
    assert text.endswith("\n") and torn not in lines
    assert len(lines) == 16 + (fmt == "csv")  # one line per step (and the CSV header)
    got = read_metrics(m)
    assert [r["step"] for r in got] == list(range(1, 17))
    want = read_metrics(tmp_path / "ref" / f"m.{fmt}")
    for a, b in zip(got, want):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


def test_6_negative_control_naive_append_merges_the_torn_row(tmp_path):
    """Appending after a torn CSV row (what resuming did) glues two records into one."""
    p = tmp_path / "m.csv"
    w = MetricsWriter(p)
    w.write({"step": 1, "epoch": 0, "loss": 0.5})
    w.close()
    with open(p, "a") as fh:
        fh.write("12")
        fh.write("121,0,0.25,,\n")  # the next record, appended without dropping the torn one
    with pytest.raises(DataError, match="line 3"):
        read_metrics(p)  # the merged row '12121,…' has too many fields: reported, never kept


def test_6_damaged_middle_line_is_reported(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"m\.jsonl: line 2 of the metrics file is damaged"):
        MetricsWriter(p, resume_step=3)


# --------------------------------------------------------------------------- 7: command lines


@pytest.mark.parametrize("argv", [
    ["train", "--out", "/etc/passwd/run", "--steps", "1"],
    ["train", "--out", "/proc/geomkfac-x", "--steps", "1"],
    ["train", "--seed", "-1", "--steps", "1"],
    ["prove", "B.1", "--fast", "--report", "/proc/nope/r.md"],
    ["train", "--task", "bogus"],
])
def test_7_cli_failures_are_one_line_and_exit_2(argv, capsys, tmp_path, monkeypatch):
    from geomkfac.cli import main

    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err


def test_7_cli_in_a_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "geomkfac.cli", "train", "--out", "/etc/passwd/run"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "--out /etc/passwd/run" in proc.stderr


def test_7_unexpected_errors_are_one_line_too(capsys, monkeypatch):
    import geomkfac.nn.cli as ncli
    from geomkfac.cli import main

    def boom(args):
        raise KeyError("a bug")

    monkeypatch.setattr(ncli, "run", boom)  # add_parser binds the module's run
    monkeypatch.delenv("GEOMKFAC_DEBUG", raising=False)
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err


# --------------------------------------------------------------------------- 8, 9: exact numbers, frames


def test_8_nan_is_never_an_exact_number():
    A = AffineSpace(2, "A")
    f = A.reference_frame
    k = f.derive(sp.Matrix([[2, 1], [0, 1]]))
    with pytest.raises(NonFiniteError):
        Point(f, [np.nan, 1.0]).coords(k)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(NonFiniteError, match="no exact value"):
            SYMBOLIC.asarray(np.array([[bad, 0.0], [0.0, 1.0]]))  # e.g. an overflowed metric
    # negative control: finite floats are converted (to the float's value, under either policy)
    assert float(SYMBOLIC.asarray(np.array([0.1]))[0]) == 0.1


def test_8_overflow_in_a_change_of_frame_is_an_error():
    """Found by the fuzz campaign: a covector near the float range moved to another frame
    overflowed to -inf silently."""
    f = AffineSpace(2, "A").reference_frame
    k = f.derive(np.array([[2.0, 1.0], [0.0, 1.0]]), np.array([1.0, -1.0]))
    with np.errstate(over="ignore"), pytest.raises(NonFiniteError, match="overflow in frame"):
        Covector(k, [-1.7976931348623157e308, 0.7]).coords(f)
    assert np.allclose(Covector(k, [1.0, 0.7]).coords(f), [2.0, 1.7])  # negative control


def test_9_frames_and_values_refuse_none_and_nan():
    f = AffineSpace(2, "A").reference_frame
    with pytest.raises(FieldMismatchError, match="None"):
        Covector(f, [None, 1])
    with pytest.raises(NonFiniteError, match="in c"):
        f.derive(np.eye(2), [np.nan, 0])
    with pytest.raises(NonFiniteError, match="in B"):
        f.derive(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    assert f.derive(np.eye(2), [1.0, 0.0]).change_to(f).apply_point(np.zeros(2)).tolist() == [-1.0, 0.0]


# --------------------------------------------------------------------------- 11, 12: validation


def test_11_wrong_types_in_this_layer():
    model = gnn.MLP([3, 4, 3], seed=0)
    with pytest.raises(DataError, match="needs a Dataset"):
        train(model, get_optimizer("sgd", model, "mse"), None, steps=2)
    with pytest.raises(ConfigurationError, match="exactly the entries"):
        BatchIterator(5, 2).load_state_dict({})
    with pytest.raises(ConfigurationError, match="n must be a positive integer"):
        random_affine(-1, np.random.default_rng(0))
    with pytest.raises(ConfigurationError, match="steps must be a non-negative integer"):
        train(model, get_optimizer("sgd", model, "mse"), _data(), steps="2")


@pytest.mark.parametrize("call", [
    lambda: gnn.MLP(["a", 1]),
    lambda: gnn.MLP([2, 1], seed=-1),
    lambda: get_optimizer("sgd", None, "mse"),
    lambda: get_optimizer("sgd", gnn.MLP([2, 1]), "mse", lr=10**400),
    lambda: get_optimizer("sgd", gnn.MLP([2, 1]), "mse").step(np.array([["a", "b"]]), np.zeros((1, 1))),
    lambda: gnn.MLP([4, 2], "bogus"),
    lambda: get_optimizer("sgd", gnn.MLP([2, 2]), "softmax_ce").step(np.ones((2, 2)), [1, [2]]),
], ids=["mlp-sizes", "mlp-seed", "optimizer-model", "lr-overflow", "string-batch", "one-layer-act",
        "ragged-targets"])
def test_11_12_wrong_types_and_values_give_library_errors(call):
    with pytest.raises(GeomKFACError):
        call()


def test_10_empty_batch_and_overflowing_inputs():
    from geomkfac.errors import DataError, NonFiniteError
    from geomkfac.kfac import independence_metric
    from geomkfac.networks import AbstractMLP

    net = AbstractMLP([2, 2], ["identity"], name="rel10")
    w = net.random_weights(0)
    with pytest.raises(DataError, match="empty"):
        independence_metric(net, w, np.empty((0, 2)), "gaussian", 1)
    model = gnn.MLP([2, 3, 1], seed=0)
    X = np.random.default_rng(0).normal(size=(4, 2))
    with pytest.raises(NonFiniteError):
        gnn.kfac_factors(model, X * 1e200, None, "mse")
    assert all(np.isfinite(A).all() for A, _ in gnn.kfac_factors(model, X, None, "mse"))  # control


def test_11_natural_gradient_update_checks_its_step_size():
    from geomkfac.kfac import kfac_metric, loss_differential, natural_gradient_update
    from geomkfac.networks import AbstractMLP

    net = AbstractMLP([2, 1], ["identity"], name="rel11")
    w = net.random_weights(0)
    X, Y = np.random.default_rng(1).normal(size=(6, 2)), np.zeros((6, 1))
    g, dh = kfac_metric(net, w, X, "gaussian"), loss_differential(net, w, X, Y, "gaussian")
    for bad in ("abc", float("nan"), True):
        with pytest.raises(ConfigurationError):
            natural_gradient_update(g, w, dh, bad)
    natural_gradient_update(g, w, dh, 0.1)  # control: a number is accepted


def test_12_bad_input_is_no_longer_accepted_silently():
    with pytest.raises(NotSymmetricError):
        whitening(np.zeros(2), [[1, 5], [0, 1]])
    with pytest.raises(NotSymmetricError):
        whitening(sp.zeros(2, 1), sp.Matrix([[1, 5], [0, 1]]))
    for C in (gnn.ConjugatedActivation, SymConjugated):
        with pytest.raises(SingularFrameChangeError):
            C("tanh", np.zeros((2, 2)))
        C("tanh", np.array([[2.0, 1.0], [0.0, 1.0]]))  # negative control: invertible is fine
    with pytest.raises(ConfigurationError, match="int8 is not a floating-point type"):
        make_dataset(np.full((2, 2), 0.7), dtype=np.int8)
    it = BatchIterator(5, 2)
    state = it.state_dict() | {"position": 99}
    with pytest.raises(ConfigurationError, match="position 99"):
        it.load_state_dict(state)
    with pytest.raises(ConfigurationError, match="position 1"):
        it.load_state_dict(it.state_dict() | {"position": 1})  # not a batch boundary
    it.load_state_dict(it.state_dict() | {"position": 4})  # negative control: the last batch
    assert len(it.next_indices()) == 1


# --------------------------------------------------------------------------- 13: one count


def test_13_stopped_run_counts_updates_from_one_only():
    data = make_dataset(np.random.default_rng(0).random((20, 3)) * 50, task="autoencoder")
    model = gnn.MLP([3, 4, 3], "tanh", seed=0)
    opt = get_optimizer("sgd", model, "mse", lr=3.0)
    res = train(model, opt, data, steps=200, batch_size=5)
    assert res.status == "non_finite"
    failed = res.steps + 1
    assert f"update {failed} was not applied" in res.message
    assert f"step {failed - 1}:" not in res.message and "step " not in res.message, res.message


def test_finite_check_is_exact_when_the_sum_overflows():
    """The optimizers' finite check decides from the sum first; a sum that overflows on
    large finite entries must not be mistaken for a NaN/inf entry (and a NaN or inf entry
    hidden among them is still found)."""
    from geomkfac.nn.optim.base import _is_finite

    big = np.full(10, 3e38, dtype=np.float32)  # finite entries, the float32 sum overflows
    assert _is_finite(big) and _is_finite([big, np.array([1e308, 1e308])])
    for bad in (np.nan, np.inf, -np.inf):
        x = big.copy()
        x[3] = bad
        assert not _is_finite(x) and not _is_finite([np.ones(2), x])
    assert not _is_finite(np.array([np.inf, -np.inf]))  # the sum is NaN, not inf
