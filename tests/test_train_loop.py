"""The training loop: bit-exact resume, metrics files, evaluation, NaN/inf stops, plots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from geomkfac.errors import CheckpointError, ConfigurationError, NonFiniteError
from geomkfac.nn.checkpoint import load_checkpoint
from geomkfac.nn.data import make_dataset
from geomkfac.nn.losses import get_loss
from geomkfac.nn.model import MLP
from geomkfac.nn.train import evaluate, read_metrics, train


@dataclass(frozen=True)
class _Info:
    loss: float
    grad_norm: float
    extras: dict = field(default_factory=dict)


class _NoisySGD:
    """A private stand-in optimizer: SGD with momentum plus a little Gaussian noise drawn from
    its own generator (so a resume must restore the RNG state too to stay bit-exact)."""

    def __init__(self, model, loss, lr=0.1, momentum=0.9, noise=1e-3, seed=0):
        self.model, self.loss = model, get_loss(loss)
        self.lr, self.momentum, self.noise = lr, momentum, noise
        self.rng = np.random.default_rng(seed)
        self.v = None
        self.t = 0

    def step(self, X, Y):
        f, cache = self.model.forward_cache(X)
        value = float(self.loss.value(f, Y))
        if not math.isfinite(value):
            raise NonFiniteError(f"step {self.t}: the loss is {value}")
        Dz = self.model.backward(cache, self.loss.grad(f, Y))
        grads = [D.T @ ab / X.shape[0] for D, ab in zip(Dz, cache.abar)]
        gnorm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        if not math.isfinite(gnorm):
            raise NonFiniteError(f"step {self.t}: the gradient is not finite")
        noise = [self.noise * self.rng.standard_normal(g.shape) for g in grads]
        self.v = [g + n if self.v is None else self.momentum * v + g + n
                  for g, n, v in zip(grads, noise, self.v or grads)]
        self.model.set_Wbars([W - self.lr * v for W, v in zip(self.model.get_Wbars(), self.v)])
        self.t += 1
        return _Info(value, gnorm, {"lr": self.lr, "note": "text"})

    def state_dict(self):
        return {"t": self.t, "v": self.v, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, d):
        self.t, self.v = int(d["t"]), None if d["v"] is None else [np.array(v) for v in d["v"]]
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = d["rng"]


def _real(name, **hyper):
    optim = pytest.importorskip("geomkfac.nn.optim")
    if not hasattr(optim, "get_optimizer"):
        pytest.skip("geomkfac.nn.optim.get_optimizer not available")

    def make(model, loss):
        return optim.get_optimizer(name, model, loss, **hyper)

    return make


OPTIMIZERS = {
    "stand-in": lambda model, loss: _NoisySGD(model, loss),
    "sgd": ("sgd", {"lr": 0.1, "momentum": 0.9}),
    "adam": ("adam", {"lr": 1e-2}),
    "kfac": ("kfac", {"lr": 0.5, "damping": 1e-2}),
    "ekfac": ("ekfac", {"lr": 0.5, "damping": 1e-2}),
}


def _factory(key):
    spec = OPTIMIZERS[key]
    return spec if callable(spec) else _real(spec[0], **spec[1])


def _problem(task="classification", n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    if task == "classification":
        data = make_dataset(X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0), task, num_classes=3)
        return data, MLP([5, 6, 3], "tanh", seed=1), "softmax_ce"
    data = make_dataset(1 / (1 + np.exp(-X)), None, "autoencoder")
    return data, MLP([5, 4, 5], "tanh", seed=1), "bernoulli"


@pytest.mark.parametrize("key", list(OPTIMIZERS))
def test_resume_is_bit_exact(tmp_path, key):
    """2k steps straight == k steps, checkpoint, fresh objects, resume, k more (float64)."""
    make = _factory(key)
    k = 7
    data, model_a, loss = _problem("classification")
    model_b = model_a.copy()
    ra = train(model_a, make(model_a, loss), data, steps=2 * k, batch_size=16, seed=3,
               loss=get_loss(loss))
    assert ra.ok and ra.steps == 2 * k

    ck = tmp_path / "c.npz"
    first = train(model_b, make(model_b, loss), data, steps=k, batch_size=16, seed=3,
                  loss=get_loss(loss), checkpoint_path=ck, config={"opt": key, "steps": k})
    assert first.checkpoint_step == k and load_checkpoint(ck).step == k
    model_c = MLP([5, 6, 3], "tanh", seed=42)  # different init: everything must come from the file
    rc = train(model_c, make(model_c, loss), data, steps=2 * k, batch_size=16, seed=3,
               loss=get_loss(loss), checkpoint_path=ck, resume=True,
               config={"opt": key, "steps": 2 * k})
    assert rc.ok and rc.steps == 2 * k and len(rc.history) == k
    for Wa, Wc in zip(model_a.get_Wbars(), model_c.get_Wbars()):
        assert Wa.tobytes() == Wc.tobytes()  # bit for bit
    # the resumed losses are the straight run's second half, exactly
    assert [r["loss"] for r in rc.history] == [r["loss"] for r in ra.history[k:]]

    # negative control: resuming WITHOUT the optimizer/iterator state (weights only) diverges
    model_d = MLP([5, 6, 3], "tanh", seed=42)
    load_checkpoint(ck).restore(model_d)
    train(model_d, make(model_d, loss), data, steps=k, batch_size=16, seed=3, loss=get_loss(loss))
    assert any(Wa.tobytes() != Wd.tobytes() for Wa, Wd in zip(model_a.get_Wbars(), model_d.get_Wbars()))


def test_resume_checks_configuration(tmp_path):
    data, model, loss = _problem()
    ck = tmp_path / "c.npz"
    train(model, _NoisySGD(model, loss), data, steps=3, batch_size=10, checkpoint_path=ck,
          config={"lr": 0.1, "steps": 3})
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.1, now 0.2"):
        train(model, _NoisySGD(model, loss), data, steps=6, batch_size=10, checkpoint_path=ck,
              resume=True, config={"lr": 0.2, "steps": 6})
    with pytest.raises(ConfigurationError, match="batch_size = 10 but this run uses 20"):
        train(model, _NoisySGD(model, loss), data, steps=6, batch_size=20, checkpoint_path=ck,
              resume=True, config={"lr": 0.1})
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(model, _NoisySGD(model, loss), data, steps=6, checkpoint_path=tmp_path / "x.npz",
              resume=True)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_metrics_file_and_eval(tmp_path, fmt):
    data, model, loss = _problem("autoencoder")
    p = tmp_path / f"m.{fmt}"
    init = model.copy()
    res = train(model, _NoisySGD(model, loss), data, steps=12, batch_size=25, eval_every=5,
                metrics_path=p, loss=get_loss(loss))
    rows = read_metrics(p)
    assert [r["step"] for r in rows] == list(range(1, 13))
    # epochs: 60 examples in batches of 25 -> 3 batches per epoch
    assert [r["epoch"] for r in rows] == [i // 3 for i in range(12)]
    for r, h in zip(rows, res.history):
        assert r["loss"] == h["loss"]  # exact round trip of floats through the file
        assert r["lr"] == 0.1 and r["note"] == "text"
        assert r["grad_norm"] > 0 and r["seconds"] > 0
    assert [r["step"] for r in rows if "eval_loss" in r] == [5, 10, 12]
    assert rows[-1]["eval_loss"] == res.final_loss == evaluate(model, get_loss(loss), data)
    # seconds are cumulative
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(rows, rows[1:]))
    # the loss on the full set went down from the initialization
    assert res.final_loss < evaluate(init, get_loss(loss), data)
    if fmt == "jsonl":
        assert all(json.loads(line) for line in p.read_text().splitlines())
    else:
        assert p.read_text().splitlines()[0].startswith("step,epoch,loss,grad_norm,seconds,eval_loss")


def test_resume_truncates_metrics_after_checkpoint(tmp_path):
    data, model, loss = _problem()
    p, ck = tmp_path / "m.csv", tmp_path / "c.npz"
    train(model, _NoisySGD(model, loss), data, steps=10, batch_size=10, metrics_path=p,
          checkpoint_path=ck, checkpoint_every=4)
    # the run ends with a checkpoint at 10; simulate a crash after step 8 -> roll back to 8
    m2 = model.copy()
    train(m2, _NoisySGD(m2, loss), data, steps=8, batch_size=10, checkpoint_path=ck)
    rows_before = read_metrics(p)
    assert len(rows_before) == 10
    train(m2, _NoisySGD(m2, loss), data, steps=12, batch_size=10, metrics_path=p,
          checkpoint_path=ck, resume=True)
    steps = [r["step"] for r in read_metrics(p)]
    assert steps == list(range(1, 13))  # rows 9, 10 of the old run replaced, no duplicates


def test_epochs_and_argument_errors():
    data, model, loss = _problem()
    res = train(model, _NoisySGD(model, loss), data, epochs=2, batch_size=25)
    assert res.steps == 6  # 60 examples, batches 25, 25, 10
    with pytest.raises(ConfigurationError, match="exactly one of steps or epochs"):
        train(model, _NoisySGD(model, loss), data, steps=2, epochs=2)
    with pytest.raises(ConfigurationError, match="checkpoint_every must be a positive"):
        train(model, _NoisySGD(model, loss), data, steps=2, checkpoint_every=0, checkpoint_path="x")


def _with_huge_lr(opt):
    """Set lr = 3 (and switch K-FAC's KL clipping off, which would tame the step)."""
    if hasattr(opt, "lr"):
        opt.lr = 3.0
    else:
        opt.hyper["lr"] = 3.0
        if "kl_clip" in opt.hyper:
            opt.hyper["kl_clip"] = None
    return opt


@pytest.mark.parametrize("key", ["stand-in", "sgd", "kfac"])
def test_huge_lr_stops_cleanly_keeping_last_good_checkpoint(tmp_path, key):
    make = _factory(key)
    data, model, loss = _problem("autoencoder")
    data = make_dataset(data.X * 50, None, "autoencoder")  # large inputs: mse blows up fast
    ck = tmp_path / "c.npz"
    opt = _with_huge_lr(make(model, "mse"))
    res = train(model, opt, data, steps=200, batch_size=20, loss=get_loss("mse"),
                checkpoint_path=ck, checkpoint_every=2)
    assert res.status == "non_finite" and not res.ok
    assert res.steps < 200
    failed = res.steps + 1
    assert f"update {failed} was not applied" in res.message
    assert "not finite" in res.message or "inf" in res.message or "nan" in res.message.lower()
    ck_step = load_checkpoint(ck).step
    if ck_step:
        assert f"last good checkpoint is {ck} (step {ck_step})" in res.message
    assert ck_step == res.checkpoint_step and ck_step <= res.steps and ck_step % 2 == 0
    assert all(np.all(np.isfinite(W)) for W in load_checkpoint(ck).Wbars)
    # the failed update was not applied: final_loss is the loss at the last good weights
    with np.errstate(all="ignore"):
        at_model = evaluate(model, get_loss("mse"), data)
    assert res.final_loss == at_model or (res.final_loss is None and not np.isfinite(at_model))
    with pytest.raises(NonFiniteError):  # and on request it propagates
        m2 = model.copy()
        o2 = _with_huge_lr(make(m2, "mse"))
        train(m2, o2, data, steps=200, batch_size=20, raise_on_nonfinite=True)


@pytest.mark.parametrize("key", ["stand-in", "sgd"])
def test_nan_in_data_stops_at_that_batch(tmp_path, key):
    data, model, loss = _problem("autoencoder", n=40)
    X = data.X.copy()
    X[25, 2] = np.nan  # one input entry; batch size 40 = full batch -> the first step fails
    bad = type(data)(X, data.Y, "autoencoder", "bad")  # built directly: make_dataset refuses NaN
    res = train(model, _factory(key)(model, loss), bad, steps=5, batch_size=40,
                checkpoint_path=tmp_path / "c.npz")
    assert res.status == "non_finite" and res.steps == 0
    assert "update 1 was not applied" in res.message and "no checkpoint was written" in res.message
    assert not (tmp_path / "c.npz").exists()


def test_loss_plot_png(tmp_path):
    from geomkfac.nn.plots import plot_loss_curves

    runs = {
        "a": [{"step": s, "loss": 2.0 / s, "seconds": 0.01 * s, **({"eval_loss": 1.9 / s} if s % 5 == 0 else {})}
              for s in range(1, 30)],
        "b": [{"step": s, "loss": 3.0 / s, "seconds": 0.02 * s} for s in range(1, 30)],
    }
    one = plot_loss_curves({"a": runs["a"]}, tmp_path / "one.png")
    two = plot_loss_curves(runs, tmp_path / "two.png", title="t")
    import matplotlib.image as mpimg

    img1, img2 = mpimg.imread(one), mpimg.imread(two)
    assert img1.shape[0] > 100 and img1.shape[1] > 300
    assert img1.shape == img2.shape
    # the second curve adds pixels of a second colour (C1, orange) that the first lacks
    # (C1 = (1.0, 0.50, 0.05), drawn with alpha 0.8 on white: red high, green middling, blue low)
    near = lambda img: np.sum((img[..., 0] > 0.9) & (np.abs(img[..., 1] - 0.6) < 0.15)  # noqa: E731
                              & (img[..., 2] < 0.4))
    assert near(img2) > 100 and near(img1) == 0
    with pytest.raises(ConfigurationError):
        plot_loss_curves({}, tmp_path / "x.png")


def test_progress_bar_shows_running_loss(capsys):
    data, model, loss = _problem()
    train(model, _NoisySGD(model, loss), data, steps=4, batch_size=10, progress=True, name="demo")
    err = capsys.readouterr().err
    assert "demo" in err and "4/4" in err and "loss=" in err
    train(model, _NoisySGD(model, loss), data, steps=4, batch_size=10, progress=False)
    assert capsys.readouterr().err == ""  # negative control: disabled means silent


@pytest.mark.parametrize("module", ["geomkfac.nn.data", "geomkfac.nn.checkpoint",
                                    "geomkfac.nn.train", "geomkfac.nn.plots", "geomkfac.nn.cli"])
def test_docstring_examples(module):
    """The ``>>>`` examples of the training modules are correct (run as doctests)."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
