"""Data loading: embedded digits, .npz and IDX files, every error case, the batch iterator."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError, DataError
from geomkfac.nn.data import (
    BatchIterator,
    load_digits,
    load_idx,
    load_idx_dataset,
    load_npz,
    make_dataset,
    save_idx,
)


# --------------------------------------------------------------------------- digits


def test_digits_autoencoder_scaled_to_unit_interval():
    ds = load_digits("autoencoder")
    assert ds.X.shape == (1797, 64) and ds.X.dtype == np.float64
    assert ds.X.min() == 0.0 and ds.X.max() == 1.0
    # the raw pixels are 0..16, so every scaled value is a multiple of 1/16 (exact in binary)
    assert np.array_equal(ds.X * 16, np.round(ds.X * 16))
    assert ds.Y is ds.X and ds.output_dim == 64


def test_digits_classification_labels():
    ds = load_digits("classification", dtype=np.float32)
    assert ds.X.dtype == np.float32 and ds.Y.shape == (1797,)
    assert ds.num_classes == 10
    # every class occurs (the digits set is roughly balanced: ~180 per class)
    counts = np.bincount(ds.Y, minlength=10)
    assert counts.min() > 150 and counts.sum() == 1797


def test_unknown_task():
    with pytest.raises(ConfigurationError, match="unknown task"):
        load_digits("regression")


def test_output_dim_checks():
    ds = load_digits("classification")
    ds.check_output_dim(10)
    ds.check_output_dim(12)  # extra unused classes are allowed
    with pytest.raises(DataError, match="labels go up to 9 but the network has only 5"):
        ds.check_output_dim(5)
    ae = load_digits("autoencoder")
    with pytest.raises(DataError, match="targets have width 64 but the network has 32"):
        ae.check_output_dim(32)


# --------------------------------------------------------------------------- .npz


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.random((20, 5)), rng.integers(0, 3, 20)
    p = tmp_path / "d.npz"
    np.savez(p, X=X, Y=y)
    ds = load_npz(p, "classification")
    assert np.array_equal(ds.X, X) and np.array_equal(ds.Y, y) and ds.num_classes == y.max() + 1
    ae = load_npz(p, "autoencoder")  # targets are the inputs; the labels are not used
    assert np.array_equal(ae.Y, X)


def test_npz_autoencoder_without_Y(tmp_path):
    X = np.random.default_rng(1).random((7, 4))
    p = tmp_path / "x.npz"
    np.savez(p, X=X)
    ds = load_npz(p)
    assert np.array_equal(ds.Y, X)


def test_npz_missing_file(tmp_path):
    p = tmp_path / "nope.npz"
    with pytest.raises(DataError, match=r"nope\.npz: no such data file"):
        load_npz(p)


def test_npz_not_a_zip(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"this is not an npz archive")
    with pytest.raises(DataError, match=r"bad\.npz: not a readable \.npz"):
        load_npz(p)


def test_npz_missing_X(tmp_path):
    p = tmp_path / "k.npz"
    np.savez(p, inputs=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"k\.npz: missing array 'X' \(found keys: inputs\)"):
        load_npz(p)


def test_npz_classification_needs_Y(tmp_path):
    p = tmp_path / "k.npz"
    np.savez(p, X=np.zeros((3, 2)))
    with pytest.raises(DataError, match="needs integer labels"):
        load_npz(p, "classification")


def test_npz_wrong_shapes_and_values(tmp_path):
    p = tmp_path / "s.npz"
    np.savez(p, X=np.zeros((4, 2)), Y=np.zeros(3, dtype=int))
    with pytest.raises(DataError, match=r"labels Y must have shape \(N,\) with N = 4"):
        load_npz(p, "classification")
    np.savez(p, X=np.zeros((4, 2)), Y=np.array([0, 1, -1, 2]))
    with pytest.raises(DataError, match="label -1 \\(example 2\\) is out of range"):
        load_npz(p, "classification")
    np.savez(p, X=np.zeros((4, 2)), Y=np.array([0, 1.5, 1, 2]))
    with pytest.raises(DataError, match="non-integral"):
        load_npz(p, "classification")
    np.savez(p, X=np.array([[0.0, np.nan]]))
    with pytest.raises(DataError, match="NaN or inf"):
        load_npz(p)
    np.savez(p, X=np.zeros(5))
    with pytest.raises(DataError, match=r"X must have shape \(N, d\)"):
        load_npz(p)
    np.savez(p, X=np.array(["a", "b"]))
    with pytest.raises(DataError, match="must have shape|numeric"):
        load_npz(p)


def test_labels_out_of_range_for_given_classes():
    with pytest.raises(DataError, match="label 3 \\(example 1\\) is out of range 0..2"):
        make_dataset(np.zeros((2, 2)), np.array([0, 3]), "classification", num_classes=3)
    # negative control: in range passes
    ds = make_dataset(np.zeros((2, 2)), np.array([0, 2]), "classification", num_classes=3)
    assert ds.num_classes == 3


# --------------------------------------------------------------------------- IDX


@settings(max_examples=25, deadline=None)
@given(
    dtype=st.sampled_from(["uint8", "int8", "int16", "int32", "float32", "float64"]),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    gz=st.booleans(),
)
def test_idx_round_trip(tmp_path_factory, dtype, shape, gz):
    rng = np.random.default_rng(len(shape))
    a = (rng.standard_normal(shape) * 50).astype(dtype)
    p = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    save_idx(p, a)
    b = load_idx(p)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def test_idx_header_written_by_hand(tmp_path):
    """Parse a file laid out byte by byte as the MNIST format describes (independent of save_idx)."""
    imgs = np.arange(2 * 3 * 2, dtype=np.uint8).reshape(2, 3, 2)
    raw = b"\x00\x00\x08\x03" + struct.pack(">III", 2, 3, 2) + imgs.tobytes()
    (tmp_path / "i.gz").write_bytes(gzip.compress(raw))
    labels = np.array([7, 1], dtype=np.uint8)
    (tmp_path / "l").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 2) + labels.tobytes())
    ints = np.array([1, -2, 300], dtype=">i4")
    (tmp_path / "n").write_bytes(b"\x00\x00\x0c\x01" + struct.pack(">I", 3) + ints.tobytes())
    assert np.array_equal(load_idx(tmp_path / "i.gz"), imgs)
    assert load_idx(tmp_path / "n").tolist() == [1, -2, 300]
    ds = load_idx_dataset(tmp_path / "i.gz", tmp_path / "l", task="classification")
    assert ds.X.shape == (2, 6)
    assert np.array_equal(ds.X, imgs.reshape(2, 6) / 255.0)
    assert ds.Y.tolist() == [7, 1]
    ae = load_idx_dataset(tmp_path / "i.gz")
    assert ae.Y.shape == (2, 6)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00", "too short for an IDX header"),
        (b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad IDX magic number 01020801"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x00", "IDX header declares 0 dimensions"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", r"IDX header declares shape \(5,\) of uint8 \(13 bytes in all\) but the file has 10 bytes"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip stream"),
    ],
)
def test_idx_malformed(tmp_path, content, message):
    p = tmp_path / "bad.idx"
    p.write_bytes(content)
    with pytest.raises(DataError, match=r"bad\.idx: " + message) as info:
        load_idx(p)
    assert str(info.value).startswith(str(p))


def test_idx_missing_and_mismatched(tmp_path):
    with pytest.raises(DataError, match=r"missing\.idx: no such IDX file"):
        load_idx(tmp_path / "missing.idx")
    with pytest.raises(DataError, match="cannot read the IDX file"):
        load_idx(tmp_path)  # a directory, not a file
    save_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8))
    save_idx(tmp_path / "l", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="4 labels but .* has 3 images"):
        load_idx_dataset(tmp_path / "i", tmp_path / "l", task="classification")
    save_idx(tmp_path / "l2", np.zeros((3, 1), np.uint8))
    with pytest.raises(DataError, match="labels must be 1-D"):
        load_idx_dataset(tmp_path / "i", tmp_path / "l2", task="classification")
    with pytest.raises(DataError, match="needs a labels file"):
        load_idx_dataset(tmp_path / "i", None, task="classification")
    save_idx(tmp_path / "flat", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="at least 2 dimensions"):
        load_idx_dataset(tmp_path / "flat")


# --------------------------------------------------------------------------- batches


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), b=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_batches_cover_each_epoch_once(n, b, seed):
    it = BatchIterator(n, b, seed)
    seen = np.concatenate([it.next_indices() for _ in range(it.batches_per_epoch)])
    assert np.array_equal(np.sort(seen), np.arange(n))
    assert (it.epoch, it.position) == (1, 0)


def test_batches_deterministic_and_seed_dependent():
    a = [BatchIterator(50, 8, seed=3).next_indices() for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    # negative control: another seed gives another order
    assert not np.array_equal(a[0], BatchIterator(50, 8, seed=4).next_indices())
    # and another epoch another permutation
    it = BatchIterator(50, 50 - 1, seed=3)
    e0 = it.next_indices(); it.next_indices()
    assert not np.array_equal(e0, it.next_indices())


def test_batch_iterator_resume_continues_sequence():
    ref = BatchIterator(23, 5, seed=9)
    seq = [ref.next_indices() for _ in range(13)]
    part = BatchIterator(23, 5, seed=9)
    for _ in range(6):
        part.next_indices()
    resumed = BatchIterator(23, 5, seed=9)
    resumed.load_state_dict(part.state_dict())
    rest = [resumed.next_indices() for _ in range(7)]
    assert all(np.array_equal(x, y) for x, y in zip(seq[6:], rest))
    other = BatchIterator(23, 4, seed=9)
    with pytest.raises(ConfigurationError, match="batch_size = 5 but this run uses 4"):
        other.load_state_dict(part.state_dict())


def test_batch_iterator_bad_arguments():
    with pytest.raises(ConfigurationError, match="batch size must be a positive integer"):
        BatchIterator(10, 0)
    with pytest.raises(DataError):
        BatchIterator(0, 5)
