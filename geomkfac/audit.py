"""The invariance audit: one abstract network trained in two frames by every optimizer.

For a reparameterization (a change of frames, paper Appendix D, or a change of the weight
coordinates, §1 and §2.1) the audit builds two coordinate networks of the *same abstract
network* — the reference one and the changed one — and trains each with two copies of the
same optimizer, one per frame.  After every step it measures how far apart the two
networks' functions are on the data (outputs compared in the same output frame)::

    d_t = max_{n,k} |f_1(x_n)_k − f_2(x‡_n)_k| / max_{n,k} |f_1(x_n)_k|

An optimizer is *invariant* to the change when ``d_t`` stays at float64 round-off
(``d_t ≤`` :data:`INVARIANT_TOL` at every step); it is *not invariant* when the networks
drift apart (``max_t d_t ≥`` :data:`DRIFT_MIN`); in between the audit says "unclear".

The changes (all applied to every space below the output; the output frame is kept, so the
outputs of the two networks are directly comparable):

* ``centering`` — ``a‡ = a − E[a]`` on the input and hidden activation spaces, the means
  taken on the data at the start (``Ω = I``, ``γ = −μ``);
* ``whitening`` — ``a‡ = Σ^{-1/2}(a − μ)`` with the data's means and covariances;
* ``random_affine`` — a random non-diagonal affine change on every activation space and
  every pre-activation space (:func:`geomkfac.reparam.random_affine` with
  :data:`RANDOM_AFFINE`);
* ``unit_scaling`` — ``a‡ = diag(s) a`` with random scales ``|s| ∈ [½, 2]`` and signs;
* ``sigmoid_tanh`` — the hidden tanh units read as sigmoid units (``σ(x) = ½ tanh(x/2) + ½``),
  the second network built with the plain sigmoid activation (tanh when the network is
  a sigmoid one);
* ``permutation`` — a permutation of the entries of every ``vec W̄_i`` that is neither a
  row nor a column permutation (§1): a linear change of the weight coordinates, not an
  affine change of activation frames;
* ``nonlinear`` — the smooth nonlinear weight coordinates ``θ = s·sinh(u/s)`` (elementwise,
  ``s =`` :data:`NONLINEAR_SCALE`): the negative control, invariant to nothing (§2.1:
  natural gradient is invariant to it only to first order).

The audited networks (:func:`~geomkfac.audit_frames.build_network`) are an MLP on
2×2-pooled digits and, as layer stacks, a small CNN and an RNN on the digit images.  The
first five changes are affine changes of activation and pre-activation frames: the second
network is :func:`geomkfac.nn.reparameterize` of the first for the MLP (Eqns. D.2, D.3),
and for the layer stacks the same change per channel / hidden space, shared by every
location and time step (Theorems 4.1, 4.2; :func:`~geomkfac.audit_frames.activation_pair`);
every optimizer of :mod:`geomkfac.nn.optim` trains it as is.  The last two change the weight
coordinates ``θ = r(u)``: the second side trains ``u`` by the optimizer's rule applied to
the coordinates ``u`` (gradient ``Jᵀ∇h``, Fisher ``JᵀFJ``, K-FAC's Kronecker factors applied
to the ``u`` gradient matrix, as an implementation storing ``u`` would), written here from
:func:`~geomkfac.nn.loss_and_grad`, :func:`~geomkfac.nn.ggn`, :func:`~geomkfac.nn.kfac_factors`
and :func:`~geomkfac.nn.kfac_solve` (EKFAC: its scalings from the backpropagated Fisher
samples, read in ``u``); with ``r = id`` it reproduces the shipped optimizers (tested).

What the theory says (:func:`expectation`): exact natural gradient is invariant to every
affine change and to permutations (Thm 3.2, §1); undamped K-FAC to the affine changes of
activation frames (Thm 2.1) but not to permutations of weight entries (§1); SGD, Adam and
the diagonal Fisher are not invariant to general affine changes (they are to permutations,
which commute with elementwise rules; per-unit scaling is a diagonal change of the weight
coordinates, to which the diagonal Fisher is invariant up to its damping λ: no claim
there); damping breaks the invariance of K-FAC and EKFAC; nothing is invariant to the
nonlinear change.

>>> res = run_audit(reparams=["random_affine"], optimizers=["sgd", "kfac"], steps=2,
...                 n_examples=32, hidden=(6,), damping_lambdas=())
>>> [(r.optimizer, r.verdict) for r in res.results]
[('sgd', 'not invariant'), ('kfac', 'invariant')]
>>> res.ok
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from geomkfac.audit_frames import (
    ARCHITECTURES,
    NONLINEAR_SCALE,
    RANDOM_AFFINE,
    CoordinateRule,
    WeightFrame,
    activation_pair,
    build_network,
    digits_problem,
)
from geomkfac.errors import ConfigurationError, GeomKFACError

__all__ = [
    "OPTIMIZERS",
    "REPARAMS",
    "ACTIVATION_REPARAMS",
    "WEIGHT_REPARAMS",
    "INVARIANT_TOL",
    "DRIFT_MIN",
    "EXACT_KFAC",
    "expectation",
    "PairResult",
    "AuditResult",
    "run_audit",
    "digits_problem",
    "ARCHITECTURES",
    "RANDOM_AFFINE",
    "NONLINEAR_SCALE",
    "WeightFrame",
    "CoordinateRule",
    "activation_pair",
    "build_network",
]

#: float64 tolerance of "invariant": the largest relative output distance over the run.
#: Why: the two networks start equal up to the round-off of Eqn. D.2 (≈ 1e-15 relative).
#: A step solves with the Fisher; a backward-stable solve perturbs it by a relative
#: ``κ·u`` at worst in output terms (``u ≈ 1.1e-16``; ``κ`` up to 2.4e7 along the 20-step
#: digits MLP runs, in either frame), i.e. ≲ 3e-9 of each step's output change (lr = 0.2),
#: so 20 steps stay ≲ 1e-8 unless round-off is amplified by the dynamics.  Measured: the
#: invariant pairs stay ≤ 7e-10 (exact NGD) and ≤ 4e-13 (K-FAC, whose Kronecker factors
#: are far better conditioned); a broken invariance shows as ≥ 1e-5 (Tikhonov λ = 1e-8
#: already gives 7e-6).
INVARIANT_TOL = 1e-8
#: the smallest largest-distance that counts as "not invariant": 100 × the tolerance, so that
#: round-off growth can never be read as a failure of invariance (between them: "unclear").
DRIFT_MIN = 1e-6

#: the shipped K-FAC as the exact, undamped K-FAC step of the theorems
EXACT_KFAC = dict(fisher="exact", damping=0.0, damping_mode="exact", eig_floor=None,
                  ema_decay=0.0, factor_update_period=1, inverse_update_period=1, kl_clip=None)

#: audit optimizer key -> (optimizer name in geomkfac.nn.optim, hyperparameters)
OPTIMIZERS: dict = {
    "sgd": ("sgd", dict(lr=0.1)),
    "adam": ("adam", dict(lr=0.01)),
    "diag_fisher": ("diag_fisher", dict(lr=0.1, damping=1e-3, fisher="exact", ema_decay=0.0)),
    "ngd": ("ngd", dict(lr=0.2, damping=0.0)),
    "kfac": ("kfac", dict(EXACT_KFAC, lr=0.5)),
    "kfac_damped": ("kfac", dict(EXACT_KFAC, lr=0.5, damping=1e-2)),
    "ekfac": ("ekfac", dict(EXACT_KFAC, lr=0.5, damping=1e-2)),
}

#: changes of activation / pre-activation frames (Appendix D)
ACTIVATION_REPARAMS = ("centering", "whitening", "random_affine", "unit_scaling", "sigmoid_tanh")
#: changes of the weight coordinates θ = r(u)
WEIGHT_REPARAMS = ("permutation", "nonlinear")
REPARAMS = ACTIVATION_REPARAMS + WEIGHT_REPARAMS

#: examples used by default (the CNN's exact Fisher is the costly part: fewer examples)
DEFAULT_EXAMPLES = {"mlp": 512, "cnn": 256, "rnn": 512}

SCHEMA = "geomkfac.audit/1"
NORM = "max |f1 - f2| / max |f1| over all examples and outputs (same output frame)"


# --------------------------------------------------------------------------- expectations
def expectation(optimizer: str, reparam: str) -> tuple:
    """What the theory says about ``optimizer`` under ``reparam``: ``(claim, reason)`` with
    ``claim`` one of ``"invariant"``, ``"not invariant"`` or ``None`` (no claim).

    >>> expectation("kfac", "permutation")[0]
    'not invariant'
    >>> expectation("ngd", "whitening")
    ('invariant', 'Thm 3.2: natural gradient with a coordinate-free metric, affine change')
    """
    if reparam == "nonlinear":
        return "not invariant", "§2.1: a nonlinear change is matched to first order only"
    if optimizer == "ngd":
        return "invariant", ("§1: natural gradient, linear change of weight coordinates"
                             if reparam == "permutation" else
                             "Thm 3.2: natural gradient with a coordinate-free metric, affine change")
    if optimizer == "kfac":
        if reparam == "permutation":
            return "not invariant", "§1: a permutation of weight entries is not a change of activation frames"
        return "invariant", "Thm 2.1: undamped exact K-FAC, affine change of activation frames"
    if optimizer in ("kfac_damped", "ekfac"):
        return "not invariant", "Tikhonov damping λI is tied to the coordinates"
    # sgd, adam, diag_fisher
    if reparam == "permutation":
        return "invariant", "an elementwise rule commutes with permuting the coordinates"
    if reparam == "unit_scaling" and optimizer == "diag_fisher":
        return None, "a diagonal change of weight coordinates: invariant up to the damping λ"
    if reparam == "unit_scaling" and optimizer == "adam":
        return "not invariant", "Adam's step is about lr per coordinate, whatever its scale"
    return "not invariant", "a coordinate-wise rule under a non-diagonal change"


# --------------------------------------------------------------------------- results
def _freeze(o):
    if isinstance(o, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in o.items()})
    if isinstance(o, (list, tuple)):
        return tuple(_freeze(v) for v in o)
    return o


def _thaw(o):
    if isinstance(o, Mapping):
        return {k: _thaw(v) for k, v in o.items()}
    if isinstance(o, tuple):
        return [_thaw(v) for v in o]
    return o


@dataclass(frozen=True)
class PairResult:
    """One optimizer under one reparameterization.

    Attributes
    ----------
    optimizer, reparam : str
    distances : tuple of float
        ``d_0`` (at the start) … ``d_T``, relative output distances (:data:`NORM`).
    expected : str or None
        The theory's claim (:func:`expectation`), or None.
    reason : str
    error : str or None
        Why the run stopped early (which frame, and the error), else None.
    diverged : bool
        The second frame's run stopped (non-finite outputs or an error) while the
        reference run went on: its last distance is ``inf``.
    """

    optimizer: str
    reparam: str
    distances: tuple
    expected: str | None
    reason: str
    error: str | None = None
    diverged: bool = False

    @property
    def final(self) -> float:
        return float(self.distances[-1]) if self.distances else float("nan")

    @property
    def first(self) -> float:
        """The distance after the first step (``d_1``)."""
        return float(self.distances[1]) if len(self.distances) > 1 else float("nan")

    @property
    def max(self) -> float:
        return float(max(self.distances)) if self.distances else float("nan")

    @property
    def verdict(self) -> str:
        """``"invariant"`` (≤ :data:`INVARIANT_TOL` at every step), ``"not invariant"``
        (≥ :data:`DRIFT_MIN` at some step, or the second frame's run diverged),
        ``"unclear"`` in between, ``"error"`` (the reference run failed)."""
        if self.diverged:
            return "not invariant"
        if self.error is not None or not self.distances or np.isnan(self.distances).any():
            return "error"
        if self.max <= INVARIANT_TOL:
            return "invariant"
        return "not invariant" if self.max >= DRIFT_MIN else "unclear"

    @property
    def holds(self) -> bool | None:
        """Whether the verdict is the expected one (None when there is no claim)."""
        return None if self.expected is None else self.verdict == self.expected

    def to_dict(self) -> dict:
        return {"optimizer": self.optimizer, "reparam": self.reparam,
                "distances": [float(d) for d in self.distances], "first": self.first,
                "final": self.final,
                "max": self.max, "verdict": self.verdict, "expected": self.expected,
                "reason": self.reason, "holds": self.holds, "error": self.error,
                "diverged": self.diverged}


@dataclass(frozen=True)
class AuditResult:
    """The audit's outcome: every :class:`PairResult`, the damping curve and the setting.

    ``ok`` is True when every claim of the theory holds; ``failures`` lists those that do
    not.  ``table()`` is the text table, ``to_json()`` the report, ``plot(path)`` the figure.
    """

    results: tuple
    damping_reparam: str | None
    damping_lambdas: tuple
    damping_final: tuple
    config: Mapping = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self):
        object.__setattr__(self, "config", _freeze(self.config))

    @property
    def failures(self) -> tuple:
        return tuple(r for r in self.results if r.holds is False)

    @property
    def ok(self) -> bool:
        return not self.failures

    def get(self, optimizer, reparam) -> PairResult:
        """The result of one pair (KeyError when it was not run)."""
        for r in self.results:
            if (r.optimizer, r.reparam) == (optimizer, reparam):
                return r
        raise KeyError((optimizer, reparam))

    def table(self) -> str:
        """One line per pair: final and largest distance, verdict, expectation."""
        head = (f"{'optimizer':<12} {'reparam':<14} {'step 1':>9} {'final':>9} {'max':>9}  "
                f"{'verdict':<14} expected")
        lines = [head, "-" * len(head)]
        for r in self.results:
            exp = "-" if r.expected is None else r.expected
            mark = "" if r.holds is None else ("  ok" if r.holds else "  FAILED")
            note = "  (second frame diverged)" if r.diverged else (
                f"  ({r.error})" if r.error else "")
            lines.append(f"{r.optimizer:<12} {r.reparam:<14} {r.first:>9.1e} {r.final:>9.1e} {r.max:>9.1e}  "
                         f"{r.verdict:<14} {exp}{mark}{note}")
        if self.damping_lambdas:
            lines.append("")
            lines.append(f"damping curve (kfac, exact damping, {self.damping_reparam}): final distance")
            for lam, d in zip(self.damping_lambdas, self.damping_final):
                lines.append(f"  lambda = {lam:<8.0e} {d:.1e}")
        lines.append("")
        lines.append(f"distance: {NORM}; invariant: <= {INVARIANT_TOL:g} at every step, "
                     f"not invariant: >= {DRIFT_MIN:g}")
        n_claims = sum(r.expected is not None for r in self.results)
        lines.append(f"{n_claims - len(self.failures)} of {n_claims} expectations hold"
                     + ("" if self.ok else ": FAILED " + ", ".join(
                         f"{r.optimizer} x {r.reparam}" for r in self.failures)))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "norm": NORM, "invariant_tol": INVARIANT_TOL,
                "drift_min": DRIFT_MIN, "config": _thaw(self.config), "ok": self.ok,
                "results": [r.to_dict() for r in self.results],
                "damping_curve": {"optimizer": "kfac", "reparam": self.damping_reparam,
                                  "lambdas": list(self.damping_lambdas),
                                  "final": list(self.damping_final)},
                "failures": [f"{r.optimizer} x {r.reparam}: expected {r.expected}, got {r.verdict}"
                             for r in self.failures]}

    def to_json(self) -> str:
        """The report as JSON (schema ``geomkfac.audit/1``; NaN written as null)."""
        def clean(o):
            if isinstance(o, float) and not np.isfinite(o):
                return None
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, list):
                return [clean(v) for v in o]
            return o
        return json.dumps(clean(self.to_dict()), indent=1)

    def plot(self, path) -> None:
        """Distances over steps (one panel per reparameterization, log scale) and the
        damping curve, written to ``path`` (any format matplotlib knows)."""
        from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

        reparams = list(dict.fromkeys(r.reparam for r in self.results))
        n = len(reparams) + (1 if self.damping_lambdas else 0)
        cols = min(4, n)
        rows = -(-n // cols)
        fig = Figure(figsize=(4 * cols, 3.2 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        floor, cap = 1e-18, 1e4  # zeros and blow-ups drawn at the plot's edges
        for ax, rp_name in zip(axes.flat, reparams):
            for r in self.results:
                if r.reparam == rp_name and r.distances:
                    ax.semilogy(np.clip(np.asarray(r.distances, float), floor, cap), label=r.optimizer)
            ax.axhline(INVARIANT_TOL, color="k", ls=":", lw=1)
            ax.set_title(rp_name)
            ax.set_xlabel("step")
            ax.set_ylabel("relative output distance")
        if self.damping_lambdas:
            ax = axes.flat[len(reparams)]
            lam = np.asarray(self.damping_lambdas, float)
            d = np.clip(np.asarray(self.damping_final, float), floor, cap)
            pos = lam > 0
            ax.loglog(lam[pos], d[pos], "o-")
            if (~pos).any():
                ax.axhline(d[~pos][0], color="g", ls="--", lw=1, label="λ = 0")
                ax.legend(fontsize=7)
            ax.axhline(INVARIANT_TOL, color="k", ls=":", lw=1)
            ax.set_title(f"K-FAC damping, {self.damping_reparam}")
            ax.set_xlabel("λ")
            ax.set_ylabel("final distance")
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)


# --------------------------------------------------------------------------- the audit
def _distance(f1, f2) -> float:
    return float(np.abs(f1 - f2).max() / max(np.abs(f1).max(), np.finfo(float).tiny))


class _Diverged(Exception):
    """The second network's run stopped (non-finite output or a raised error)."""


def _run_pair(step1, step2, out1, out2, steps):
    """``(distances, diverged, error)``: ``d_0 … d_T`` while stepping both sides; a failure of
    the reference side is an error of the run (raised), one of the second side ends the run
    with distance ``inf`` (the two functions are then certainly not the same)."""
    d = [_distance(out1(), out2())]
    for _ in range(steps):
        step1()
        try:
            with np.errstate(all="ignore"):
                step2()
                f2 = out2()
            if not np.all(np.isfinite(f2)):
                raise _Diverged("the second network's outputs are not finite")
        except (GeomKFACError, _Diverged, np.linalg.LinAlgError) as exc:
            d.append(float("inf"))
            return d, True, f"second frame: {type(exc).__name__}: {exc}"
        d.append(_distance(out1(), f2))
    return d, False, None


def _run_activation_pair(key, model, net2, X, X2, Y, steps, hyper_override=None):
    from geomkfac.nn import get_optimizer

    name, hyper = OPTIMIZERS[key]
    hyper = dict(hyper, **(hyper_override or {}))
    m1, m2 = model.copy(), net2.copy()
    o1, o2 = get_optimizer(name, m1, "mse", **hyper), get_optimizer(name, m2, "mse", **hyper)
    return _run_pair(lambda: o1.step(X, Y), lambda: o2.step(X2, Y),
                     lambda: m1.forward(X), lambda: m2.forward(X2), steps)


def _run_weight_pair(key, model, frame, X, Y, steps):
    from geomkfac.nn import get_optimizer

    name, hyper = OPTIMIZERS[key]
    m1, m2 = model.copy(), model.copy()
    o1 = get_optimizer(name, m1, "mse", **hyper)
    o2 = CoordinateRule(name, hyper, m2, "mse", frame)
    m2.set_flat(frame.theta(o2.u))
    return _run_pair(lambda: o1.step(X, Y), lambda: o2.step(X, Y),
                     lambda: m1.forward(X), lambda: m2.forward(X), steps)


def _names(given, known, what):
    if given is None:
        return list(known)
    given = [given] if isinstance(given, str) else list(given)
    bad = [g for g in given if g not in known]
    if bad or not given:
        raise ConfigurationError(f"unknown {what} {', '.join(map(repr, bad)) or '(none given)'}; "
                                 f"choose from: {', '.join(known)}")
    return given


def run_audit(arch: str = "mlp", reparams: Sequence[str] | None = None,
              optimizers: Sequence[str] | None = None, steps: int = 20, *,
              n_examples: int | None = None, hidden: Sequence[int] = (8,), activation: str = "tanh",
              seed: int = 0, damping_lambdas: Sequence[float] = (0.0, 1e-8, 1e-6, 1e-4, 1e-2, 1.0),
              damping_reparam: str = "random_affine",
              expectations: Mapping | None = None) -> AuditResult:
    """Train every optimizer from the same abstract start in two frames and measure the
    distance between the two networks' functions after every step.

    Parameters
    ----------
    arch : {"mlp", "cnn", "rnn"}
        The architecture (:func:`~geomkfac.audit_frames.build_network`): an MLP
        ``[16, *hidden, 10]`` on the pooled digits, a CNN (two valid 3×3 convolutions with 3
        and 2 channels, a dense layer) on the 8×8 images, an RNN (6 hidden units, last step,
        dense) over the 8 rows of an image (:func:`~geomkfac.audit_frames.digits_problem`);
        squared error on one-hot labels (Gaussian output, whose GGN is the Fisher).
    reparams : list of str, optional
        Names from :data:`REPARAMS` (default: all).
    optimizers : list of str, optional
        Keys of :data:`OPTIMIZERS` (default: all).
    steps : int
        Steps per run (full batch).
    n_examples, hidden, activation, seed
        The data size (default :data:`DEFAULT_EXAMPLES` of the architecture), hidden
        widths (MLP only), hidden activation (``"tanh"`` or ``"sigmoid"``) and the seed of
        the data subset, the weights and the random changes.
    damping_lambdas : sequence of float
        λ for the damping curve: the final distance of K-FAC with exact damping
        ``(A ⊗ G + λI)⁻¹`` under ``damping_reparam`` (empty: no curve).  The curve is
        reported, not checked.
    expectations : mapping, optional
        ``{(optimizer, reparam): "invariant" | "not invariant" | None}`` overriding
        :func:`expectation` (e.g. to check that a wrong claim is caught).

    Returns
    -------
    AuditResult

    Raises
    ------
    ConfigurationError
        For an unknown architecture, reparameterization or optimizer, or a bad size.
    """
    from geomkfac.nn import ggn

    if arch not in ARCHITECTURES:
        raise ConfigurationError(f"unknown architecture {arch!r}; choose one of: "
                                 f"{', '.join(ARCHITECTURES)}")
    reparams = _names(reparams, REPARAMS, "reparameterization(s)")
    optimizers = _names(optimizers, tuple(OPTIMIZERS), "optimizer(s)")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigurationError(f"steps must be a whole number >= 1, got {steps!r}")
    if activation not in ("tanh", "sigmoid"):
        raise ConfigurationError(f"activation must be 'tanh' or 'sigmoid', got {activation!r}")
    lambdas = tuple(float(x) for x in damping_lambdas)
    if any(not np.isfinite(x) or x < 0 for x in lambdas):
        raise ConfigurationError(f"damping_lambdas must be finite and >= 0, got {lambdas}")
    if damping_reparam not in ACTIVATION_REPARAMS:
        raise ConfigurationError(f"damping_reparam must be one of {', '.join(ACTIVATION_REPARAMS)}, "
                                 f"got {damping_reparam!r}")
    expectations = dict(expectations or {})
    bad = {k: v for k, v in expectations.items() if v not in ("invariant", "not invariant", None)}
    if bad:
        raise ConfigurationError(f"expectations must be 'invariant', 'not invariant' or None, got {bad}")
    if n_examples is None:
        n_examples = DEFAULT_EXAMPLES[arch]
    X, Y = digits_problem(n_examples, seed, arch)
    model = build_network(arch, hidden, activation, seed)

    results = []
    for rp_name in reparams:
        rng = np.random.default_rng([seed, REPARAMS.index(rp_name)])
        if rp_name in ACTIVATION_REPARAMS:
            net2, X2 = activation_pair(rp_name, model, X, rng)
        else:
            frame = WeightFrame(rp_name, [W.shape for W in model.get_Wbars()], rng)
        for key in optimizers:
            claim, reason = expectation(key, rp_name)
            if (key, rp_name) in expectations:
                claim, reason = expectations[(key, rp_name)], "given by the caller"
            try:
                d, diverged, error = (
                    _run_activation_pair(key, model, net2, X, X2, Y, steps)
                    if rp_name in ACTIVATION_REPARAMS else
                    _run_weight_pair(key, model, frame, X, Y, steps))
            except GeomKFACError as exc:
                d, diverged, error = [], False, f"reference frame: {type(exc).__name__}: {exc}"
            results.append(PairResult(key, rp_name, tuple(d), claim, reason, error, diverged))

    damping_final = []
    if lambdas:
        rng = np.random.default_rng([seed, REPARAMS.index(damping_reparam)])
        net2, X2 = activation_pair(damping_reparam, model, X, rng)
        for lam in lambdas:
            try:
                d, _, _ = _run_activation_pair("kfac", model, net2, X, X2, Y, steps, {"damping": lam})
            except GeomKFACError:  # the reference run failed: no distance (NaN, null in JSON)
                d = [float("nan")]
            damping_final.append(d[-1])
    cond = float(np.linalg.cond(ggn(model, X, Y, "mse")))
    config = {"arch": arch, "network": repr(model), "activation": activation, "loss": "mse",
              "fisher_condition_at_start": cond, "num_params": int(model.get_flat().size),
              "data": f"digits {X.shape[1:]} per example, {n_examples} examples, one-hot targets",
              "steps": int(steps), "seed": int(seed),
              "optimizers": {k: {"name": OPTIMIZERS[k][0], **OPTIMIZERS[k][1]} for k in optimizers}}
    return AuditResult(tuple(results), damping_reparam if lambdas else None, lambdas,
                       tuple(damping_final), config)
