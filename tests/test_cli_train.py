"""``geomkfac train`` in-process: smoke runs on the digits, resume, and clean errors."""

from __future__ import annotations

import numpy as np
import pytest

from geomkfac.cli import main
from geomkfac.nn.checkpoint import load_checkpoint
from geomkfac.nn.train import read_metrics

PNG = b"\x89PNG\r\n\x1a\n"


def _run(capsys, *argv):
    rc = main(["train", "--no-progress", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_autoencoder_smoke_two_optimizers(tmp_path, capsys):
    rc, out, err = _run(capsys, "--arch", "64-16-64", "--optimizer", "sgd,adam",
                        "--lr", "sgd=0.1,adam=0.01", "--momentum", "0.9", "--steps", 6,
                        "--batch-size", 50, "--eval-every", 3, "--out", tmp_path)
    assert rc == 0, err
    for name in ("sgd", "adam"):
        rows = read_metrics(tmp_path / f"metrics-{name}.csv")
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
        # Bernoulli loss per 64-pixel image: at a small random init about 64 ln 2 ≈ 44;
        # a sane value lies in (0, 64 * 2]
        assert all(0 < r["loss"] < 128 for r in rows)
        assert [r["step"] for r in rows if "eval_loss" in r] == [3, 6]
        assert load_checkpoint(tmp_path / f"checkpoint-{name}.npz").step == 6
    assert read_metrics(tmp_path / "metrics-sgd.csv")[0]["momentum"] == 0.9
    # both started from the same initialization: the same first mini-batch loss
    assert read_metrics(tmp_path / "metrics-sgd.csv")[0]["loss"] == \
        read_metrics(tmp_path / "metrics-adam.csv")[0]["loss"]
    png = (tmp_path / "loss.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 5000
    lines = out.splitlines()
    assert lines[0].split() == ["optimizer", "status", "final", "loss", "steps", "seconds"]
    assert lines[2].split()[:2] == ["sgd", "completed"] and lines[2].split()[3] == "6"
    assert lines[3].split()[:2] == ["adam", "completed"]


def test_classification_smoke_jsonl(tmp_path, capsys):
    name = "kfac"
    rc, out, err = _run(capsys, "--task", "classification", "--arch", "64-20-10",
                        "--optimizer", name, "--damping", "0.1", "--opt-arg", "fisher=exact",
                        "--opt-arg", "kfac:inverse_update_period=2", "--epochs", 1, "--batch-size", 600,
                        "--format", "jsonl", "--dtype", "float32", "--out", tmp_path)
    assert rc == 0, err
    rows = read_metrics(tmp_path / f"metrics-{name}.jsonl")
    assert len(rows) == 3  # 1797 examples in batches of 600
    # softmax cross-entropy over 10 classes starts near ln 10 ≈ 2.3
    assert 1.0 < rows[0]["loss"] < 4.0
    assert rows[-1]["eval_loss"] < rows[0]["loss"] + 0.5
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG)
    cfg = load_checkpoint(tmp_path / "checkpoint-kfac.npz").config
    assert cfg["hyper"] == {"damping": 0.1, "fisher": "exact", "inverse_update_period": 2}
    assert cfg["dtype"] == "float32" and rows[0]["damping"] == 0.1


def test_resume_through_cli_is_bit_exact(tmp_path, capsys):
    common = ["--arch", "64-8-64", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.5",
              "--batch-size", 64]
    assert _run(capsys, *common, "--steps", 8, "--out", tmp_path / "a")[0] == 0
    assert _run(capsys, *common, "--steps", 4, "--out", tmp_path / "b")[0] == 0
    rc, out, err = _run(capsys, *common, "--steps", 8, "--resume", "--out", tmp_path / "b")
    assert rc == 0, err
    a = load_checkpoint(tmp_path / "a" / "checkpoint-sgd.npz")
    b = load_checkpoint(tmp_path / "b" / "checkpoint-sgd.npz")
    assert a.step == b.step == 8
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a.Wbars, b.Wbars))
    ra, rb = (read_metrics(tmp_path / d / "metrics-sgd.csv") for d in "ab")
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]
    # a changed setting refuses to resume
    rc, out, err = _run(capsys, *common[:-1], 32, "--steps", 9, "--resume", "--out", tmp_path / "b")
    assert rc == 2 and "cannot resume" in err and "batch_size" in err


def test_divergence_exit_code_and_message(tmp_path, capsys):
    rc, out, err = _run(capsys, "--arch", "64-8-64", "--loss", "mse", "--optimizer", "sgd",
                        "--lr", "1e6", "--steps", 50, "--batch-size", 100,
                        "--checkpoint-every", 1, "--out", tmp_path)
    assert rc == 1
    assert "training 'sgd' stopped, update" in err and "not finite" in err
    assert "last good checkpoint is" in err
    ck = load_checkpoint(tmp_path / "checkpoint-sgd.npz")
    assert all(np.all(np.isfinite(W)) for W in ck.Wbars)
    assert "non_finite" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--act", "swish"], "swish"),
        (["--optimizer", "sgd,rmsprop"], "rmsprop"),
        (["--optimizer", "sgd,sgd"], "lists a name twice"),
        (["--arch", "32-16-64"], "starts with input width 32 but the data (digits) has 64"),
        (["--arch", "64-16-32"], "targets have width 64 but the network has 32"),
        (["--arch", "64-x-64"], "is not a list of layer sizes"),
        (["--arch", "64"], "need at least an input and an output width"),
        (["--task", "classification", "--arch", "64-16-5"], "labels go up to 9 but the network has only 5"),
        (["--task", "classification", "--loss", "mse"], "classification uses integer labels"),
        (["--loss", "softmax_ce"], "needs --task classification"),
        (["--loss", "hinge"], "hinge"),
        (["--lr", "fast"], "--lr 'fast' is not a number"),
        (["--lr", "adam=0.1"], "NAME one of the optimizers given (sgd)"),
        (["--opt-arg", "warp=9"], "warp"),
        (["--opt-arg", "novalue"], "expected KEY=VALUE"),
        (["--momentum", "0.9", "--optimizer", "adam"], "momentum"),
        (["--idx-labels", "l.idx"], "--idx-labels needs --idx-images"),
        (["--steps", "-3"], "--steps must be positive"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--workers", "0"], "the number of workers must be an integer >= 1 or 'auto'"),
    ],
)
def test_bad_input_clean_errors(tmp_path, capsys, argv, message):
    rc, out, err = _run(capsys, "--optimizer", "sgd", "--steps", 1, "--out", tmp_path, *argv)
    assert rc == 2, (out, err)
    assert err.startswith("geomkfac train: error:") and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("var, value", [("GEOMKFAC_WORKERS", "zero"), ("GEOMKFAC_JIT", "maybe")])
def test_bad_environment_refused_before_any_file(tmp_path, capsys, monkeypatch, var, value):
    """A setting the first step would read from the environment is checked before the output
    directory is written to: exit 2, a one-line message naming the variable, no file."""
    from geomkfac.nn import kernels, parallel

    monkeypatch.setenv(var, value)
    parallel.set_workers(None), kernels.use_jit(None)  # read the environment again
    try:
        rc, out, err = _run(capsys, "--optimizer", "sgd", "--steps", 1, "--out", tmp_path / "run")
    finally:
        monkeypatch.delenv(var)
        parallel.set_workers(None), kernels.use_jit(None)
    assert rc == 2 and err.startswith("geomkfac train: error:") and var in err, err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_data_file_errors(tmp_path, capsys):
    rc, _, err = _run(capsys, "--data", tmp_path / "none.npz", "--out", tmp_path)
    assert rc == 2 and "none.npz: no such data file" in err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    rc, _, err = _run(capsys, "--data", bad, "--out", tmp_path)
    assert rc == 2 and "bad.npz: not a readable .npz file" in err
    np.savez(tmp_path / "k.npz", inputs=np.zeros((3, 2)))
    rc, _, err = _run(capsys, "--data", tmp_path / "k.npz", "--out", tmp_path)
    assert rc == 2 and "missing array 'X'" in err
    (tmp_path / "i.idx").write_bytes(b"\x00\x00\x08\x02\x00\x00")
    rc, _, err = _run(capsys, "--idx-images", tmp_path / "i.idx", "--out", tmp_path)
    assert rc == 2 and "i.idx: truncated IDX header" in err
    rc, _, err = _run(capsys, "--resume", "--optimizer", "sgd", "--out", tmp_path / "fresh")
    assert rc == 2 and "no such checkpoint" in err


def test_user_npz_and_idx_data_train(tmp_path, capsys):
    from geomkfac.nn.data import save_idx

    rng = np.random.default_rng(0)
    X, y = rng.random((40, 6)), rng.integers(0, 3, 40)
    np.savez(tmp_path / "d.npz", X=X, Y=y)
    rc, out, err = _run(capsys, "--data", tmp_path / "d.npz", "--task", "classification",
                        "--optimizer", "sgd", "--steps", 3, "--batch-size", 20, "--out", tmp_path / "n")
    assert rc == 0, err
    ck = load_checkpoint(tmp_path / "n" / "checkpoint-sgd.npz")
    assert ck.config["arch"] == [6, 128, 3]  # default widths from the data
    save_idx(tmp_path / "img.gz", (rng.random((30, 4, 4)) * 255).astype(np.uint8))
    save_idx(tmp_path / "lab", rng.integers(0, 10, 30).astype(np.uint8))
    rc, out, err = _run(capsys, "--idx-images", tmp_path / "img.gz", "--idx-labels", tmp_path / "lab",
                        "--task", "classification", "--arch", "16-8-10", "--optimizer", "sgd",
                        "--steps", 2, "--out", tmp_path / "i")
    assert rc == 0, err
    rc, out, err = _run(capsys, "--idx-images", tmp_path / "img.gz", "--idx-labels", tmp_path / "lab",
                        "--task", "classification", "--arch", "16-8-4", "--optimizer", "sgd",
                        "--steps", 2, "--out", tmp_path / "i")
    assert rc == 2 and "labels go up to" in err
