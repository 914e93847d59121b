"""The shared machinery of the optimizers: :class:`StepInfo`, the :class:`Optimizer` base
class (hyperparameter validation, input checks, one forward/backward pass, the finiteness
guard, the state dictionary) and small helpers on per-layer parameter lists.

Parameters are handled per layer as the homogeneous weights ``W̄_i = [W_i b_i]``
(``out × (in+1)``); the flat vector is ``θ = [vec(W̄_1); …; vec(W̄_L)]`` with column-stacking
``vec`` (paper-notes §1). The objective is ``h(θ) = mean_n ℓ(f(x_n; θ), y_n)`` (plus
``½ η ‖θ‖²`` when a weight decay ``η`` is set, which every optimizer adds to the gradient
as ``η θ``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geomkfac.errors import (CheckpointError, ConfigurationError, DataError, DimensionError,
                             NonFiniteError)
from geomkfac.memory import ensure_default as ensure_default_allocator
from geomkfac.nn.layers.base import rows_product
from geomkfac.nn.parallel import row_chunks, run_chunks
from geomkfac.threads import single_threaded_blas

__all__ = [
    "StepInfo",
    "Optimizer",
    "rng_to_array",
    "rng_from_array",
    "flatten",
    "unflatten",
    "layer_dot",
]


@dataclass(frozen=True)
class StepInfo:
    """What one optimizer step reports.

    Attributes
    ----------
    step : int
        Index of the step just taken (0 for the first).
    loss : float
        The minibatch loss ``h(θ)`` **before** the step (without weight decay).
    grad_norm : float
        Euclidean norm of the gradient used (including weight decay).
    extras : dict
        Optimizer-specific diagnostics, e.g. ``lr``, ``damping``, ``rho``, ``momentum``.
    """

    step: int
    loss: float
    grad_norm: float
    extras: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def flatten(layers) -> np.ndarray:
    """Stack per-layer matrices into ``θ`` order (column-stacking ``vec`` per layer).

    >>> import numpy as np
    >>> flatten([np.array([[1.0, 2.0], [3.0, 4.0]])])
    array([1., 3., 2., 4.])
    """
    return np.concatenate([np.asarray(M).reshape(-1, order="F") for M in layers])


def unflatten(theta, shapes) -> list:
    """Inverse of :func:`flatten` for the given per-layer ``shapes``.

    >>> import numpy as np
    >>> unflatten(np.array([1.0, 3.0, 2.0, 4.0]), [(2, 2)])[0]
    array([[1., 2.],
           [3., 4.]])
    """
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(np.asarray(theta[start:start + size]).reshape(shape, order="F"))
        start += size
    return out


def layer_dot(U, V) -> float:
    """``Σ_i ⟨U_i, V_i⟩`` over per-layer lists (the Euclidean inner product of θ-vectors).
    An F-ordered layer is paired through the transposes (``⟨Uᵀ, Vᵀ⟩ = ⟨U, V⟩``, a C-ordered view
    of it): ``np.vdot`` flattens in C order and would copy it.

    >>> import numpy as np
    >>> U = [np.arange(6.0).reshape(2, 3), np.ones((3, 2)).T]
    >>> layer_dot(U, U), float(sum(np.sum(u * u) for u in U))
    (61.0, 61.0)
    """
    return float(sum(np.vdot(u.T, v.T) if u.ndim == 2 and not u.flags.c_contiguous
                     else np.vdot(u, v) for u, v in zip(U, V)))


def rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """Encode the state of a PCG64 ``Generator`` as a ``uint64`` array of 6 words.

    >>> import numpy as np
    >>> rng = np.random.default_rng(3); _ = rng.random()
    >>> clone = rng_from_array(rng_to_array(rng))
    >>> bool(clone.random() == rng.random())
    True
    """
    st = rng.bit_generator.state
    if st.get("bit_generator") != "PCG64":
        raise ConfigurationError(
            f"only PCG64 random generators can be saved, got {st.get('bit_generator')}"
        )
    mask = (1 << 64) - 1
    s, inc = st["state"]["state"], st["state"]["inc"]
    return np.array(
        [s & mask, s >> 64, inc & mask, inc >> 64, st["has_uint32"], st["uinteger"]],
        dtype=np.uint64,
    )


def rng_from_array(arr) -> np.random.Generator:
    """Inverse of :func:`rng_to_array`."""
    w = [int(x) for x in np.asarray(arr, dtype=np.uint64).reshape(-1)]
    if len(w) != 6:
        raise CheckpointError(f"an RNG state must have 6 words, got {len(w)}")
    bg = np.random.PCG64()
    bg.state = {
        "bit_generator": "PCG64",
        "state": {"state": w[0] | (w[1] << 64), "inc": w[2] | (w[3] << 64)},
        "has_uint32": w[4],
        "uinteger": w[5],
    }
    return np.random.Generator(bg)


def _same_setting(a, b) -> bool:
    """Whether a user's hyperparameter value equals a preset's (``0`` and ``0.0`` agree,
    ``None`` only with ``None``)."""
    if a is None or b is None:
        return a is b
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return type(a) is type(b) and a == b
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _exact_optimizers() -> dict:
    from geomkfac.nn.optim import OPTIMIZERS

    return {n: c for n, c in OPTIMIZERS.items() if c.exact_preset is not None}


#: the most Monte Carlo targets per example: each costs a backward pass over the batch; beyond
#: this many the exact Fisher (``fisher="exact"``, one pass per output dimension) is cheaper
#: and has no sampling error
MAX_MC_SAMPLES = 1024

MC_SAMPLES_HINT = "; for a better estimate of the Fisher use fisher='exact'"


def _is_finite(x) -> bool:
    """Whether every entry is finite. Decided first from the sum (one pass, no temporary: a
    NaN or inf entry makes it non-finite); only a non-finite sum (which an overflow of large
    finite entries can also cause) is checked entry by entry."""
    if isinstance(x, (list, tuple)):
        return all(_is_finite(v) for v in x)
    x = np.asarray(x)
    if x.dtype.kind in "fc":
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(x.sum()):
                return True
    return bool(np.all(np.isfinite(x)))


# --------------------------------------------------------------------------- state validation


def _kind(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, np.integer)):
        return "int"
    if isinstance(v, (float, np.floating)):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, np.ndarray):
        return "array"
    if v is None:
        return "None"
    return type(v).__name__


def _list_groups(state) -> dict:
    """``{key: n}`` for the per-layer lists ``key.n`` of a state dict."""
    return {k[:-2]: v for k, v in state.items() if k.endswith(".n")}


def _check_state(d, own: dict, shapes, name: str, dtype) -> None:
    """Raise :class:`CheckpointError` unless ``d`` has the structure of ``own`` (see
    :meth:`Optimizer.load_state_dict`)."""
    if not isinstance(d, dict):
        raise CheckpointError(
            f"an optimizer state must be a dict as returned by state_dict(), got {type(d).__name__}"
        )
    if not all(isinstance(k, str) for k in d):
        raise CheckpointError("optimizer state keys must be strings")
    got = str(d.get("name", ""))
    if got != name:
        raise CheckpointError(f"optimizer state is for {got!r} but this optimizer is {name!r}")
    groups = _list_groups(own)
    where = f"{name!r} state"
    for key, n in _list_groups(d).items():
        if key not in groups:
            continue
        if _kind(n) != "int" or n < -1:
            raise CheckpointError(f"{where}: {key}.n must be an integer >= -1, got {n!r}")
        own_n = groups[key]
        if n >= 0 and own_n >= 0 and n != own_n:
            raise CheckpointError(
                f"{where}: {key} has {n} entries but this optimizer has {own_n}; "
                "resume with the same architecture"
            )
    entry = {k: _entry_of(k, groups) for k in set(d) | set(own)}
    fixed_own = {k for k in own if entry[k] is None}
    fixed_in = {k for k in d if entry[k] is None}
    if fixed_own != fixed_in:
        missing, unknown = sorted(fixed_own - fixed_in), sorted(fixed_in - fixed_own)
        raise CheckpointError(
            f"{where} does not fit this optimizer"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(unknown)}" if unknown else "")
            + "; load a state saved by the same optimizer"
        )
    entries_in = {k for k in d if entry[k] is not None}
    want = {(g, i) for g in groups for i in range(max(int(d[f"{g}.n"]), 0))}
    have = {entry[k][:2] for k in entries_in}
    if have != want:
        bad = sorted(f"{g}.{i}" for g, i in have ^ want)[:4]
        raise CheckpointError(f"{where}: per-layer entries do not match their counts ({', '.join(bad)})")
    for k in sorted(fixed_in | entries_in):
        v, ref = d[k], own.get(k)
        if k == "name":
            continue
        kind = _kind(v)
        if ref is not None and kind != _kind(ref):
            raise CheckpointError(f"{where}: {k} must be {_kind(ref)}, got {kind}")
        if kind == "int" and k == "step" and v < 0:
            raise CheckpointError(f"{where}: the step counter must be >= 0, got {v}")
        if kind == "float" and not np.isfinite(v):
            raise CheckpointError(f"{where}: {k} is {v}, not finite")
        if kind == "array":
            if ref is not None and v.dtype != ref.dtype:
                raise CheckpointError(f"{where}: {k} has dtype {v.dtype}, expected {ref.dtype}")
            if ref is not None and ref.size and v.size and v.shape != ref.shape:
                raise CheckpointError(
                    f"{where}: {k} has shape {v.shape}, expected {ref.shape}; "
                    "resume with the same architecture"
                )
            if ref is not None and not (ref.size and v.size):
                # an empty placeholder on one side (e.g. no previous update yet)
                if v.ndim != ref.ndim:
                    raise CheckpointError(f"{where}: {k} has {v.ndim} axes, expected {ref.ndim}")
                if v.size and v.ndim == 1 and v.shape[0] not in _flat_lengths(shapes):
                    raise CheckpointError(
                        f"{where}: {k} has length {v.shape[0]}, which fits neither the "
                        f"{sum(int(np.prod(s)) for s in shapes)} parameters nor the "
                        f"{len(shapes)} layers; resume with the same architecture"
                    )
            if ref is None and not entry[k][2]:  # a per-layer array ``key.i``
                if v.dtype != dtype:
                    raise CheckpointError(f"{where}: {k} has dtype {v.dtype}, expected the model's {dtype}")
                _check_layer_entry(where, k, v, shapes)
            if v.dtype.kind in "fc" and not np.all(np.isfinite(v)):
                raise CheckpointError(f"{where}: {k} holds NaN or inf")
        elif ref is None and (not entry[k][2] or kind not in ("int", "float", "str", "bool")):
            raise CheckpointError(f"{where}: {k} must be an array, got {kind}")
        elif ref is None and kind == "int" and v < 0:
            raise CheckpointError(f"{where}: {k} must be >= 0, got {v}")


def _entry_of(k: str, groups) -> tuple | None:
    """``(group, i, rest)`` when ``k`` is entry ``i`` of a per-layer list ``group``
    (``group.i``, or ``group.i.rest`` for an entry with several parts), else None."""
    for g in sorted(groups, key=len, reverse=True):
        if k.startswith(g + "."):
            idx, _, rest = k[len(g) + 1:].partition(".")
            if idx.isdigit():
                return g, int(idx), rest
    return None


def _flat_lengths(shapes) -> set:
    """Lengths a 1-D state entry may have: all parameters, one per layer, a layer's widths."""
    out = {sum(int(np.prod(s)) for s in shapes), len(shapes)}
    for s in shapes:
        out.update(int(x) for x in s)
    return out


def _check_layer_entry(where, k, v, shapes) -> None:
    """A per-layer array this optimizer does not hold yet: it must fit layer ``i``'s
    parameter shape ``(out, in+1)``."""
    i = int(k.rpartition(".")[2])
    if i >= len(shapes):
        return  # a list not indexed by layer: nothing to compare with
    shape = tuple(shapes[i])
    rectangular = v.ndim == 2 and v.shape[0] != v.shape[1]
    if (rectangular and v.shape != shape) or v.ndim > len(shape) or \
            any(s not in shape for s in v.shape):
        raise CheckpointError(
            f"{where}: {k} has shape {v.shape}, which does not fit layer {i + 1} with parameters "
            f"of shape {shape}; resume with the same architecture"
        )


# --------------------------------------------------------------------------- base class


class BoundLoss:
    """An optimizer's loss ``ℓ``, bound to its model.

    Calling it, ``opt.loss(X, Y)``, gives the minibatch objective ``h(θ) = (1/N) Σ_n ℓ_n`` at
    the current weights (without weight decay: the value :meth:`Optimizer.step` reports as
    ``StepInfo.loss`` before its update) and has no side effect: no weight, optimizer state,
    random generator or step counter changes. Every other attribute is the loss object's own
    (``value(f, Y)``, ``grad(f, Y)``, ``name``, …).
    """

    def __init__(self, optimizer, loss):
        self._optimizer = optimizer
        self._loss = loss

    @property
    def loss_fn(self):
        """The loss object itself."""
        return self._loss

    def __call__(self, X, Y) -> float:
        opt = self._optimizer
        X, Y = opt._prepare(X, Y)
        value = float(self._loss.value(opt.model.forward(X), Y))
        if not np.isfinite(value):
            raise NonFiniteError(f"the loss is not finite ({value}) on this batch at the current weights")
        return value

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_loss", "_optimizer"):
            raise AttributeError(name)
        return getattr(self._loss, name)

    def __repr__(self) -> str:
        return f"BoundLoss({self._loss!r})"


class Optimizer:
    """Base class: subclasses set ``name`` and ``defaults`` and implement :meth:`_step`.

    Every optimizer is built as ``Opt(model, loss, lr=..., **hyper)``; an unknown
    hyperparameter or an invalid value raises :class:`ConfigurationError`. ``step(X, Y)``
    does its own forward and backward passes, updates ``model`` in place and returns a
    :class:`StepInfo`. If the loss, the gradient, a curvature factor or the update is NaN or
    inf, :class:`NonFiniteError` (naming the quantity and the step) is raised **before** the
    model or the optimizer state is modified. ``loss(X, Y)`` evaluates the objective at the
    current weights without side effects (:class:`BoundLoss`).

    ``exact=True`` selects the optimizer's exact natural-gradient preset
    (:attr:`exact_preset`, where it has one): the preset's hyperparameters are fixed, and
    giving one of them another value raises :class:`ConfigurationError`.
    """

    name = "optimizer"
    #: hyperparameter name -> default value (``lr`` included)
    defaults: dict = {}
    #: the hyperparameters of the exact natural-gradient step (None: no such preset)
    exact_preset: dict | None = None
    #: whether the step uses nothing of its forward/backward pass but the loss and the
    #: gradient, so that the batch may be split over worker threads (:mod:`geomkfac.nn.parallel`)
    batch_parallel: bool = False

    def __init__(self, model, loss, exact=False, **hyper):
        from geomkfac.nn.losses import loss_for_model  # late import: nn-core module

        if not all(hasattr(model, a) for a in ("get_Wbars", "forward_cache", "dtype")):
            raise ConfigurationError(
                f"an optimizer needs a geomkfac.nn model (MLP or Sequential), got {type(model).__name__}"
            )
        if not isinstance(exact, (bool, np.bool_)):
            raise ConfigurationError(f"exact must be True or False, got {exact!r}")
        if exact:
            hyper = self._with_exact_preset(hyper)
        self.exact = bool(exact)
        unknown = sorted(set(hyper) - set(self.defaults))
        if unknown:
            raise ConfigurationError(
                f"unknown hyperparameter(s) {', '.join(map(repr, unknown))} for optimizer "
                f"{self.name!r}; it accepts: {', '.join(sorted(self.defaults))}"
            )
        h = dict(self.defaults)
        h.update(hyper)
        self.model = model
        #: the loss object (``value(f, Y)``, ``grad(f, Y)``, …); ``loss`` is it bound to the model
        self.loss_fn = loss_for_model(model, loss)
        self.loss = BoundLoss(self, self.loss_fn)
        self.hyper = h
        self._validate_common(h)
        self._validate(h)
        self.step_count = 0
        self.rng = np.random.default_rng(int(h.get("seed", 0)))
        self.dtype = np.dtype(model.dtype)
        self._shapes = [W.shape for W in model.get_Wbars()]
        self._grad_sq = None  # (gradient list, its squared norm) of the last pass

    def _with_exact_preset(self, hyper: dict) -> dict:
        """``hyper`` completed by :attr:`exact_preset`; a contradicting value is refused."""
        preset = self.exact_preset
        if preset is None:
            have = ", ".join(sorted(n for n, c in _exact_optimizers().items()))
            raise ConfigurationError(
                f"optimizer {self.name!r} has no exact natural-gradient preset; exact=True is "
                f"offered by: {have}")
        clash = [k for k, v in preset.items() if k in hyper and not _same_setting(hyper[k], v)]
        if clash:
            said = ", ".join(f"{k}={hyper[k]!r} (the preset has {preset[k]!r})" for k in clash)
            raise ConfigurationError(
                f"exact=True fixes {', '.join(f'{k}={v!r}' for k, v in preset.items())}; got {said}. "
                "Drop those arguments, or drop exact=True and configure every setting yourself")
        return {**hyper, **preset}

    # -- validation ------------------------------------------------------------------------
    @staticmethod
    def _number(h, key, lo=None, hi=None, lo_open=False, hi_open=False):
        v = h[key]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ConfigurationError(f"hyperparameter {key!r} must be a number, got {v!r}")
        try:
            v = float(v)
        except OverflowError:
            raise ConfigurationError(f"hyperparameter {key!r} is too large for a float: {v!r}") from None
        bad = not np.isfinite(v)
        if lo is not None:
            bad |= v <= lo if lo_open else v < lo
        if hi is not None:
            bad |= v >= hi if hi_open else v > hi
        if bad:
            rng = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, "
            rng += f"{hi if hi is not None else 'inf'}{')' if hi_open else ']'}"
            raise ConfigurationError(f"hyperparameter {key!r} must lie in {rng}, got {v!r}")
        return v

    @staticmethod
    def _integer(h, key, lo=1, hi=None, why=""):
        v = h[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigurationError(f"hyperparameter {key!r} must be an integer >= {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise ConfigurationError(
                f"hyperparameter {key!r} must be an integer in [{lo}, {hi}], got {v!r}{why}")
        return int(v)

    @staticmethod
    def _choice(h, key, choices):
        v = h[key]
        if not isinstance(v, str) or v.lower() not in choices:
            raise ConfigurationError(
                f"hyperparameter {key!r} must be one of {', '.join(choices)}, got {v!r}"
            )
        return v.lower()

    @staticmethod
    def _flag(h, key):
        v = h[key]
        if not isinstance(v, (bool, np.bool_)):
            raise ConfigurationError(f"hyperparameter {key!r} must be True or False, got {v!r}")
        return bool(v)

    def _validate_common(self, h):
        if "lr" in h:
            self._number(h, "lr", 0, lo_open=True)
        if "weight_decay" in h:
            self._number(h, "weight_decay", 0)
        if "seed" in h:
            self._integer(h, "seed", 0)

    def _validate(self, h):
        """Check the subclass's own hyperparameters (override)."""

    # -- between steps ---------------------------------------------------------------------
    def set_lr(self, lr) -> None:
        """Set the learning rate of the steps that follow: a learning-rate schedule calls
        this between steps. Nothing else changes (the momentum buffers, curvature
        estimates and step counter are kept).

        The learning rate is not part of :meth:`state_dict`: a schedule is a function of
        :attr:`step_count`, which is, so after a resume the caller sets it again from there.

        Raises
        ------
        ConfigurationError
            ``lr`` is not a positive finite number (the constructor's rule), or this
            optimizer sets its own step size (K-FAC with ``adaptive_lr=True``); nothing is
            changed.

        >>> import numpy as np
        >>> from geomkfac.nn import MLP, get_optimizer
        >>> opt = get_optimizer("sgd", MLP([2, 1], seed=0), "mse", lr=0.1)
        >>> opt.set_lr(0.05 * (1 + np.cos(np.pi * 3 / 10)))  # cosine decay, step 3 of 10
        >>> info = opt.step(np.ones((4, 2)), np.zeros((4, 1)))
        >>> round(info.extras["lr"], 6)
        0.079389
        """
        self._lr_is_used()
        value = self._number({"lr": lr}, "lr", 0, lo_open=True)
        self.hyper["lr"] = value

    def _lr_is_used(self) -> None:
        """Raise :class:`ConfigurationError` where the ``lr`` hyperparameter does not set the
        step size (override)."""

    # -- one pass ----------------------------------------------------------------------------
    def _prepare(self, X, Y):
        X = self.model.check_batch(X)
        if X.shape[0] == 0:
            raise DataError("got an empty batch (N = 0)")
        if X.dtype.kind not in "biuf":
            raise DataError(f"the input batch must hold numbers, got dtype {X.dtype}")
        if not np.issubdtype(X.dtype, np.floating) or X.dtype != self.dtype:
            X = X.astype(self.dtype)
        if not _is_finite(X):
            raise NonFiniteError(
                f"step {self.step_count}: the input batch X contains NaN or inf; clean the data"
            )
        C = self.model.output_shape(X.shape[1:])[-1]
        try:
            Y = np.asarray(Y)
        except ValueError as exc:  # ragged nested lists
            raise DataError(f"the targets are not a regular array ({exc}); give one row per example") from None
        if Y.dtype.kind not in "biuf":
            raise DataError(f"the targets must hold numbers, got dtype {Y.dtype}")
        Y = self.loss_fn.check_targets(Y, C, X.shape[0])
        return X, Y

    def _check(self, name, value):
        """Raise :class:`NonFiniteError` naming ``name`` if ``value`` has NaN/inf."""
        if not _is_finite(value):
            raise NonFiniteError(
                f"step {self.step_count}: {name} is not finite (NaN or inf); the model was not "
                "modified. Lower the learning rate, raise the damping, or check the data"
            )

    def _pass_sums(self, X, Y):
        """One forward and backward pass: ``(loss, sums, f, cache, Dz)``, the mean loss and per
        layer ``Σ_n Dz_nᵀ ā_n`` (not yet divided by N)."""
        f, cache = self.model.forward_cache(X)
        loss, g_out = self.loss_fn._value_and_grad(f, Y)  # Y was checked by _prepare
        self._check("the loss", loss)
        Dz = self.model.backward(cache, g_out)
        return float(loss), [rows_product(D, ab) for D, ab in zip(Dz, cache.abar)], f, cache, Dz

    def _forward_backward(self, X, Y):
        """One forward and backward pass: ``(loss, grads, f, cache, Dz)``; grads per layer
        ``DW̄_i = (1/N) Dz_iᵀ ā_i`` (Eqn. 2.2), weight decay not yet added.

        Where the optimizer is :attr:`batch_parallel` and :mod:`geomkfac.nn.parallel` splits
        the batch, the blocks of rows run in worker threads with a single-threaded BLAS, the
        loss is ``Σ_k (N_k/N) loss_k`` and the sums are added in block order; ``f``, ``cache``
        and ``Dz`` are then None."""
        N = X.shape[0]
        chunks = row_chunks(N) if self.batch_parallel else None
        with single_threaded_blas() if chunks else nullcontext():
            if chunks is None:
                loss, grads, f, cache, Dz = self._pass_sums(X, Y)
            else:
                parts = run_chunks(lambda s: self._pass_sums(X[s], Y[s])[:2], chunks)
                loss = sum((s.stop - s.start) / N * v for s, (v, _) in zip(chunks, parts))
                grads, f, cache, Dz = parts[0][1], None, None, None
                for _, sums in parts[1:]:
                    for g, h in zip(grads, sums):
                        g += h
            for g in grads:  # a fresh array: divided in place
                g /= N
            # the finiteness check and the gradient's norm from one pass: a NaN or inf entry
            # makes the squared norm non-finite; only then (or when finite squares overflowed)
            # are the entries checked one by one
            with np.errstate(over="ignore", invalid="ignore"):
                sq = layer_dot(grads, grads)
        if not np.isfinite(sq):
            self._check("the gradient", grads)
        self._grad_sq = (grads, sq)
        return loss, grads, f, cache, Dz

    def _grad_norm(self, grads) -> float:
        """``‖g‖`` of the per-layer gradient ``grads``: the squared norm :meth:`_forward_backward`
        computed as its finiteness check when ``grads`` is the list it returned (no weight
        decay added), else one pass over ``grads``."""
        cached, self._grad_sq = self._grad_sq, None
        if cached is not None and cached[0] is grads:
            return float(np.sqrt(cached[1]))
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.sqrt(layer_dot(grads, grads)))

    def _add_weight_decay(self, grads, Wbars):
        eta = float(self.hyper.get("weight_decay", 0.0))
        if eta == 0.0:
            return grads
        return [g + eta * W for g, W in zip(grads, Wbars)]

    def _apply(self, Wbars, deltas):
        """``W̄_i ← W̄_i + δ_i`` for every layer, in place (``Wbars``: the weights the step
        started from, which the update was computed at)."""
        layers = self.model.param_layers
        if len(deltas) != len(layers):
            raise DimensionError(f"expected {len(layers)} updates, got {len(deltas)}")
        for l, d in zip(layers, deltas):
            l.add_to_Wbar(d)

    # -- public API -----------------------------------------------------------------------------
    def step(self, X, Y) -> StepInfo:
        """Take one step on the batch ``(X, Y)``, updating the model in place.

        Returns
        -------
        StepInfo
            ``step``: the index of this step (0 for the first); ``loss``: the minibatch loss
            ``h(θ)`` **before** the update (without weight decay; ``loss(X, Y)`` gives it
            after); ``grad_norm``: the norm of the gradient used (weight decay included);
            ``extras``: the optimizer's diagnostics (``lr``, …).
        """
        ensure_default_allocator()  # keep freed memory between steps (geomkfac.memory)
        X, Y = self._prepare(X, Y)
        info = self._step(X, Y)
        self.step_count += 1
        return info

    def _step(self, X, Y) -> StepInfo:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit: a flat dict of arrays and scalars."""
        d = {"name": self.name, "step": int(self.step_count), "rng": rng_to_array(self.rng)}
        d.update(self._state())
        return d

    def load_state_dict(self, d) -> None:
        """Restore what :meth:`state_dict` returned.

        The incoming state is validated against this optimizer's own current
        :meth:`state_dict` before anything is modified: the same keys, and for each entry
        the same kind (int, float, bool, str, array), dtype and shape; integers such as the
        step counter non-negative and floats finite. Per-layer lists (``<key>.n`` with
        entries ``<key>.0 …``, or ``<key>.0.<part> …``) may be present or absent
        (``n = -1``) on either side; a per-layer array this optimizer does not hold yet must
        have the model's dtype, match the layer's parameter shape where it is rectangular
        and use only that layer's widths where it is square or 1-D, so the state of another
        architecture is refused (the parts of multi-part entries are checked for their kind,
        finiteness and non-negative integers only).

        Raises
        ------
        CheckpointError
            ``d`` is not a state of this optimizer for this model (nothing is modified).
        """
        _check_state(d, self.state_dict(), self._shapes, self.name, self.dtype)
        d = dict(d)
        try:
            self.step_count = int(d["step"])
            self.rng = rng_from_array(d["rng"])
            self._load_state(d)
        except KeyError as exc:
            raise CheckpointError(f"optimizer state lacks the entry {exc.args[0]!r}") from None

    def _state(self) -> dict:
        return {}

    def _load_state(self, d) -> None:
        pass

    # helpers for per-layer lists in the state dict
    @staticmethod
    def _put_list(d, key, arrays):
        if arrays is None:
            d[f"{key}.n"] = -1
            return
        d[f"{key}.n"] = len(arrays)
        for i, a in enumerate(arrays):
            d[f"{key}.{i}"] = np.array(a, copy=True)

    @staticmethod
    def _get_list(d, key):
        n = int(d[f"{key}.n"])
        if n < 0:
            return None
        return [np.array(d[f"{key}.{i}"], copy=True) for i in range(n)]

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in sorted(self.hyper.items()))
        return f"{type(self).__name__}({hp})"
