"""``geomkfac train`` with convolutional and recurrent networks: the digits as images, as
sequences (classification at the last step, next-row prediction), user .npz sequences,
IDX images as (1, 28, 28), layer strings, and clean errors."""

from __future__ import annotations

import numpy as np
import pytest

from geomkfac.cli import main
from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.nn.architectures import build_model, parse_architecture
from geomkfac.nn.checkpoint import load_checkpoint
from geomkfac.nn.data import save_idx
from geomkfac.nn.train import read_metrics


def _run(capsys, *argv):
    rc = main(["train", "--no-progress", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _losses(path):
    return [r["loss"] for r in read_metrics(path)]


def test_default_cnn_on_digits(tmp_path, capsys):
    rc, out, err = _run(capsys, "--model", "cnn", "--task", "classification", "--optimizer", "sgd",
                        "--steps", 2, "--batch-size", 32, "--eval-every", 2, "--out", tmp_path)
    assert rc == 0, err
    ck = load_checkpoint(tmp_path / "checkpoint-sgd.npz")
    # the default architecture conv16k3p1-max2-conv32k3p1-avg2-dense10 on 1x8x8 images
    assert [W.shape for W in ck.Wbars] == [(16, 10), (32, 145), (10, 129)]


def test_cnn_on_digits_learns(tmp_path, capsys):
    rc, out, err = _run(capsys, "--arch", "conv8k3p1-max2-dense10", "--task", "classification",
                        "--optimizer", "kfac", "--act", "relu", "--lr", 0.3, "--damping", 0.01,
                        "--steps", 25, "--batch-size", 64, "--eval-every", 25, "--out", tmp_path)
    assert rc == 0, err
    losses = _losses(tmp_path / "metrics-kfac.csv")
    assert losses[0] == pytest.approx(np.log(10), abs=0.3)  # near-uniform start
    assert np.mean(losses[-5:]) < 0.5 * losses[0]


def test_cnn_layer_string_and_resume(tmp_path, capsys):
    args = ["--arch", "conv4k3s2-avg2-dense10", "--task", "classification", "--optimizer", "ekfac",
            "--batch-size", 50, "--out", tmp_path]
    rc, _, err = _run(capsys, *args, "--steps", 4)
    assert rc == 0, err
    rc, _, err = _run(capsys, *args, "--steps", 6, "--resume")
    assert rc == 0, err
    assert [r["step"] for r in read_metrics(tmp_path / "metrics-ekfac.csv")] == [1, 2, 3, 4, 5, 6]


def test_rnn_digits_rows_classification(tmp_path, capsys):
    rc, out, err = _run(capsys, "--model", "rnn", "--task", "classification", "--optimizer", "kfac",
                        "--lr", 0.3, "--damping", 0.01, "--steps", 30, "--batch-size", 64,
                        "--eval-every", 30, "--out", tmp_path)
    assert rc == 0, err
    ck = load_checkpoint(tmp_path / "checkpoint-kfac.npz")
    assert [W.shape for W in ck.Wbars] == [(64, 64 + 8 + 1), (10, 65)]  # rnn64-last-dense10
    losses = _losses(tmp_path / "metrics-kfac.csv")
    assert np.mean(losses[-5:]) < 0.6 * losses[0]


def test_rnn_next_row_sequence_task(tmp_path, capsys):
    rc, out, err = _run(capsys, "--model", "rnn", "--task", "sequence", "--optimizer", "kfac",
                        "--steps", 6, "--batch-size", 64, "--eval-every", 6, "--out", tmp_path)
    assert rc == 0, err
    ck = load_checkpoint(tmp_path / "checkpoint-kfac.npz")
    assert [W.shape for W in ck.Wbars] == [(64, 73), (8, 65)]  # rnn64-dense8 at every step
    # Bernoulli loss summed over 7 steps x 8 pixels: about 56 ln 2 at the start
    losses = _losses(tmp_path / "metrics-kfac.csv")
    assert 20 < losses[0] < 80 and losses[-1] < losses[0]


def test_rnn_on_user_npz_sequences(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5, 3))
    np.savez(tmp_path / "cls.npz", X=X, Y=(X[:, :, 0].sum(1) > 0).astype(int))
    rc, _, err = _run(capsys, "--model", "rnn", "--data", tmp_path / "cls.npz", "--task",
                      "classification", "--optimizer", "adam", "--steps", 3, "--out", tmp_path / "a")
    assert rc == 0, err
    np.savez(tmp_path / "seq.npz", X=X, Y=np.cumsum(X[:, :, :2], axis=1))
    rc, _, err = _run(capsys, "--arch", "rnn8-dense2", "--data", tmp_path / "seq.npz", "--task",
                      "sequence", "--loss", "mse", "--optimizer", "kfac", "--steps", 3,
                      "--out", tmp_path / "b")
    assert rc == 0, err
    assert [W.shape for W in load_checkpoint(tmp_path / "b" / "checkpoint-kfac.npz").Wbars] == \
        [(8, 12), (2, 9)]


def test_idx_images_are_1x28x28(tmp_path, capsys):
    rng = np.random.default_rng(0)
    save_idx(tmp_path / "img", rng.integers(0, 256, (20, 28, 28)).astype(np.uint8))
    save_idx(tmp_path / "lab", rng.integers(0, 10, 20).astype(np.uint8))
    rc, _, err = _run(capsys, "--arch", "conv2k5p2-max4-dense10", "--idx-images", tmp_path / "img",
                      "--idx-labels", tmp_path / "lab", "--task", "classification",
                      "--optimizer", "sgd", "--steps", 2, "--out", tmp_path / "out")
    assert rc == 0, err
    Wbars = load_checkpoint(tmp_path / "out" / "checkpoint-sgd.npz").Wbars
    assert [W.shape for W in Wbars] == [(2, 26), (10, 2 * 7 * 7 + 1)]
    # the same images as 28 rows of 28 pixels: predict the next row (no labels needed)
    rc, _, err = _run(capsys, "--arch", "rnn4-dense28", "--idx-images", tmp_path / "img",
                      "--task", "sequence", "--optimizer", "sgd", "--steps", 2,
                      "--out", tmp_path / "seq")
    assert rc == 0, err
    Wbars = load_checkpoint(tmp_path / "seq" / "checkpoint-sgd.npz").Wbars
    assert [W.shape for W in Wbars] == [(4, 4 + 28 + 1), (28, 5)]


@pytest.mark.parametrize("argv, msg", [
    (["--model", "mlp", "--task", "sequence"], "recurrent"),
    (["--model", "cnn", "--arch", "rnn8-dense10", "--task", "classification"], "does not match"),
    (["--arch", "conv8-dense10", "--task", "classification"], "cannot read layer"),
    (["--arch", "conv8k9-dense10", "--task", "classification"], "larger than the padded"),
    (["--arch", "rnn8-dense10", "--task", "autoencoder"], "not supported"),
])
def test_clean_errors(tmp_path, capsys, argv, msg):
    rc, _, err = _run(capsys, *argv, "--steps", 1, "--out", tmp_path)
    assert rc == 2 and msg in err


def test_build_model_and_parse():
    with pytest.raises(ConfigurationError):
        parse_architecture("max3")  # no layer with parameters
    with pytest.raises(DimensionError, match="sequences"):
        build_model("rnn4-dense2", (1, 8, 8))
    net = build_model("conv3k3-dense2", (2, 5, 5), act=["relu", "identity"], dtype=np.float32)
    assert net.dtype == np.float32 and net.output_shape((2, 5, 5)) == (2,)
