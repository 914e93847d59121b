"""Coordinate networks and their reparameterization (paper Appendix D, Eqns. D.2, D.3).

A *coordinate network* is an MLP written in one choice of frames:
``z_i = W̄_i ā_{i-1}``, ``a_i = φ_i(z_i)`` with ``ā = [a; 1]`` and ``W̄_i = [W_i b_i]``.
Choosing other frames on the spaces ``A_i`` (``a‡ = Ω_i a + γ_i``) and ``Z_i``
(``z = Φ_i z‡ + τ_i``, note the direction κ → ι) gives another coordinate network for
the same abstract MLP, with

* weights (D.2): ``[W̄_i; 0 1] = [Φ_i]_H [W̄‡_i; 0 1] [Ω_{i-1}]_H``, i.e.
  ``W̄‡_i = top rows of [Φ_i]_H⁻¹ [W̄_i; 0 1] [Ω_{i-1}]_H⁻¹``;
* activations (D.3): ``φ‡_i(z‡) = Ω_i φ_i(Φ_i z‡ + τ_i) + γ_i``.

Both compute the same function: ``f‡(Ω_0 x + γ_0) = Ω_L f(x) + γ_L``.  This module works
on plain arrays / sympy matrices; :mod:`geomkfac.networks` reaches the same coordinate
networks from the core's frames and affine maps.

Rows are examples everywhere: numeric batches are ``(N, n)`` arrays, symbolic batches are
sympy matrices ``(N, n)`` (one example per row), as for the metrics of
:mod:`geomkfac.kfac`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import sympy as sp

from geomkfac.activations_sym import (
    Activation,
    ConjugatedActivation,
    as_exact_sym,
    as_sym_matrix,
    get_activation,
    is_symbolic,
)
from geomkfac.errors import (
    ConfigurationError,
    DimensionError,
    NonFiniteError,
    NotSymmetricError,
    SingularFrameChangeError,
)

__all__ = [
    "CoordinateMLP",
    "LayerChange",
    "homogeneous",
    "transform_weights",
    "reparameterize",
    "normalize_changes",
    "sigmoid_to_tanh",
    "tanh_to_sigmoid",
    "centering",
    "whitening",
    "unit_scaling",
    "permutation",
    "random_affine",
]


# --------------------------------------------------------------------------- field helpers
_to_sym = as_exact_sym  # exact sympy copy: floats become the exact binary Rationals


def _to_num(m) -> np.ndarray:
    if isinstance(m, sp.MatrixBase):
        return np.array(m.evalf(), dtype=float)
    return np.asarray(m, dtype=float)


def homogeneous(B, c, symbolic: bool = False):
    """``[B]_H = [[B, c], [0, 1]]`` for the change ``y = B x + c``.

    >>> homogeneous(np.eye(2) * 2, np.array([1.0, -1.0]))
    array([[ 2.,  0.,  1.],
           [ 0.,  2., -1.],
           [ 0.,  0.,  1.]])
    """
    if symbolic or is_symbolic(B, c):
        B = _to_sym(B)
        c = _to_sym(c).reshape(B.shape[0], 1)
        top = B.row_join(c)
        bottom = sp.zeros(1, B.shape[1]).row_join(sp.ones(1, 1))
        return sp.ImmutableMatrix(top.col_join(bottom))
    B = np.asarray(B, dtype=float)
    n = B.shape[0]
    H = np.zeros((n + 1, B.shape[1] + 1))
    H[:n, : B.shape[1]] = B
    H[:n, -1] = np.asarray(c, dtype=float).reshape(-1)
    H[n, -1] = 1.0
    return H


# --------------------------------------------------------------------------- LayerChange
@dataclass(frozen=True)
class LayerChange:
    """A change of frames on the spaces around one layer's activation (Appendix D).

    ``(Omega, gamma)``: change ι → κ on the activation space ``A_i``, ``a‡ = Ω a + γ``.
    ``(Phi, tau)``: change κ → ι on the pre-activation space ``Z_i``, ``z = Φ z‡ + τ``.
    ``None`` means identity / zero.  For the input (layer 0) only ``Omega, gamma`` apply.

    >>> ch = LayerChange(Omega=np.diag([2.0, 1.0]), gamma=np.array([0.0, 1.0]))
    >>> ch.apply_activations(np.array([[1.0, 1.0]]))
    array([[2., 2.]])
    """

    Omega: Any = None
    gamma: Any = None
    Phi: Any = None
    tau: Any = None

    @property
    def changes_A(self) -> bool:
        return self.Omega is not None or self.gamma is not None

    @property
    def changes_Z(self) -> bool:
        return self.Phi is not None or self.tau is not None

    @property
    def is_symbolic(self) -> bool:
        return is_symbolic(self.Omega, self.gamma, self.Phi, self.tau)

    def on_A_only(self) -> "LayerChange":
        """The same change with the pre-activation part dropped (e.g. for the input)."""
        return LayerChange(Omega=self.Omega, gamma=self.gamma)

    def _parts(self, n, which, symbolic):
        B, c = (self.Omega, self.gamma) if which == "A" else (self.Phi, self.tau)
        if symbolic:
            B = sp.ImmutableMatrix(sp.eye(n)) if B is None else _to_sym(B)
            c = sp.ImmutableMatrix(sp.zeros(n, 1)) if c is None else _to_sym(c).reshape(n, 1)
        else:
            B = np.eye(n) if B is None else _to_num(B)
            c = np.zeros(n) if c is None else _to_num(c).reshape(-1)
        if tuple(B.shape) != (n, n) or (c.shape[0] != n):
            raise DimensionError(
                f"LayerChange: the change on {which} must be {n}×{n} with a length-{n} shift, "
                f"got {tuple(B.shape)} and {tuple(c.shape)}"
            )
        return B, c

    def omega_H(self, n: int, symbolic: bool = False):
        """``[Ω]_H`` for an ``n``-dimensional activation space."""
        return homogeneous(*self._parts(n, "A", symbolic), symbolic=symbolic)

    def phi_H(self, n: int, symbolic: bool = False):
        """``[Φ]_H`` for an ``n``-dimensional pre-activation space."""
        return homogeneous(*self._parts(n, "Z", symbolic), symbolic=symbolic)

    def _width(self, which):
        B, c = (self.Omega, self.gamma) if which == "A" else (self.Phi, self.tau)
        if B is not None:
            return int(B.shape[0])
        return None if c is None else int(np.size(c) if not isinstance(c, sp.MatrixBase) else len(c))

    def _sym_rows(self, x, which):
        """A symbolic batch as rows ``(N, n)``, and whether it was given as one column."""
        x = sp.ImmutableMatrix(x) if isinstance(x, sp.MatrixBase) else as_sym_matrix(x)
        n = self._width(which)
        if x.cols == 1 and x.rows != 1 and (n is None or x.rows == n):
            return sp.ImmutableMatrix(x.T), True  # one example as a column (the older form)
        return x, False

    def apply_activations(self, a):
        """``a‡ = Ω a + γ`` on a batch ``(N, n)``, rows are examples (numeric, or a sympy
        matrix; a single sympy column is read as one example and stays a column)."""
        if is_symbolic(a):
            rows, column = self._sym_rows(a, "A")
            O, g = self._parts(rows.shape[1], "A", True)
            out = sp.ImmutableMatrix(rows * O.T + sp.ones(rows.rows, 1) * g.T)
            return sp.ImmutableMatrix(out.T) if column else out
        a = np.asarray(a, dtype=float)
        O, g = self._parts(a.shape[-1], "A", False)
        return a @ O.T + g

    def apply_preactivations(self, z):
        """``z‡ = Φ⁻¹ (z − τ)`` on a batch ``(N, n)``, rows are examples (as
        :meth:`apply_activations`)."""
        if is_symbolic(z):
            rows, column = self._sym_rows(z, "Z")
            P, t = self._parts(rows.shape[1], "Z", True)
            out = sp.ImmutableMatrix((P.inv() * (rows.T - t * sp.ones(1, rows.rows))).T)
            return sp.ImmutableMatrix(out.T) if column else out
        z = np.asarray(z, dtype=float)
        P, t = self._parts(z.shape[-1], "Z", False)
        return np.linalg.solve(P, (z - t).T).T


IDENTITY_CHANGE = LayerChange()


def normalize_changes(changes, L: int) -> list[LayerChange]:
    """Return a list of ``L + 1`` LayerChanges from a dict or sequence keyed by the
    activation index ``i = 0..L`` (``a_0`` the input, ``a_i`` the output of weight layer
    ``W_i``; the change ``i`` acts on ``A_i`` and, for ``i >= 1``, on ``Z_i``).

    >>> [c.changes_A for c in normalize_changes({1: centering([1.0])}, 2)]
    [False, True, False]
    >>> normalize_changes({3: centering([1.0])}, 2)
    Traceback (most recent call last):
    ...
    geomkfac.errors.ConfigurationError: change for activation 3: activation spaces are numbered 0..2 (0: the input, 2: the output)
    """
    out = [IDENTITY_CHANGE] * (L + 1)
    if changes is None:
        return out
    if isinstance(changes, LayerChange):
        raise ConfigurationError(
            "give changes as {i: LayerChange} keyed by the activation index (0 = input, "
            "1..L-1 hidden, L output) or a sequence of L+1 LayerChange/None"
        )
    if isinstance(changes, (str, bytes)) or not isinstance(changes, (Mapping, Sequence)):
        raise ConfigurationError(
            f"changes must be a mapping {{i: LayerChange}} or a sequence of L+1 LayerChange/None, "
            f"got {type(changes).__name__}")
    items = changes.items() if isinstance(changes, Mapping) else enumerate(changes)
    for i, ch in items:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) <= L:
            raise ConfigurationError(
                f"change for activation {i!r}: activation spaces are numbered 0..{L} "
                f"(0: the input, {L}: the output)")
        if ch is None:
            continue
        if not isinstance(ch, LayerChange):
            raise ConfigurationError(f"change for activation {i} must be a LayerChange, got {ch!r}")
        out[int(i)] = ch
    if out[0].changes_Z:
        raise ConfigurationError(
            "the input (activation 0) has no pre-activation space: give only Omega, gamma for "
            "it (change.on_A_only())"
        )
    return out


# --------------------------------------------------------------------------- CoordinateMLP
class CoordinateMLP:
    """An MLP in coordinates: ``z_i = W̄_i ā_{i-1}``, ``a_i = φ_i(z_i)`` (Eqn. 2.6).

    Parameters
    ----------
    Wbars : sequence of L matrices
        Homogeneous weights ``W̄_i = [W_i b_i]`` of shape ``n_i × (n_{i-1} + 1)``: float
        arrays, or sympy matrices for a symbolic network.
    activations : sequence of L activations (names or :class:`Activation` objects)

    Examples
    --------
    >>> net = CoordinateMLP([np.array([[1.0, 0.0, 0.5]]), np.array([[2.0, -1.0]])],
    ...                     ["tanh", "identity"])
    >>> net.widths
    (2, 1, 1)
    >>> net.forward(np.array([[0.0, 3.0]])).round(6)
    array([[-0.075766]])
    """

    def __init__(self, Wbars: Sequence, activations: Sequence):
        if len(Wbars) != len(activations):
            raise DimensionError(
                f"{len(Wbars)} weight matrices but {len(activations)} activations; "
                "give one activation per layer"
            )
        if not Wbars:
            raise DimensionError("a CoordinateMLP needs at least one layer")
        self.symbolic = is_symbolic(*Wbars)
        conv = _to_sym if self.symbolic else (lambda m: np.asarray(m, dtype=float))
        self.Wbars = tuple(conv(W) for W in Wbars)
        self.activations = tuple(get_activation(a) for a in activations)
        widths = [self.Wbars[0].shape[1] - 1]
        for i, W in enumerate(self.Wbars, start=1):
            if W.shape[1] != widths[-1] + 1:
                raise DimensionError(
                    f"layer {i}: W̄ has {W.shape[1]} columns, expected n_{i-1} + 1 = {widths[-1] + 1}"
                )
            widths.append(W.shape[0])
        self.widths = tuple(int(w) for w in widths)

    @property
    def L(self) -> int:
        return len(self.Wbars)

    # ------------------------------------------------------------------ forward
    def trace(self, x):
        """Forward pass keeping everything: ``(abars, zs, acts)``.

        ``abars[i-1]`` is ``ā_{i-1}`` (input of layer i), ``zs[i-1]`` is ``z_i`` and
        ``acts[i]`` is ``a_i`` (``acts[0] = x``). Rows are examples, numeric or symbolic:
        each entry is ``(N, ·)`` (a numpy array, or a sympy matrix for a symbolic network or
        input). A single sympy column ``(n_0, 1)`` is still read as one example (deprecated)
        and then gives columns.
        """
        if self.symbolic or is_symbolic(x):
            cols, as_column = self._symbolic_examples(x)
            per = [self._trace_column(c) for c in cols]
            if as_column:
                return per[0]

            def stack(k, j):
                return sp.ImmutableMatrix(sp.Matrix.vstack(*[p[k][j].T for p in per]))

            return tuple([stack(k, j) for j in range(len(per[0][k]))] for k in range(3))
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[None, :]
        self._check_input(x.shape[1])
        a = x
        abars, zs, acts = [], [], [a]
        for W, phi in zip(self.Wbars, self.activations):
            ab = np.hstack([a, np.ones((a.shape[0], 1))])
            z = ab @ W.T
            a = phi(z)
            abars.append(ab)
            zs.append(z)
            acts.append(a)
        return abars, zs, acts

    def _symbolic_examples(self, x):
        """The examples of a symbolic batch as columns, and whether ``x`` was a single
        column (the deprecated form)."""
        n0 = self.widths[0]
        if isinstance(x, sp.MatrixBase):
            M = sp.ImmutableMatrix(x)
        else:
            arr = np.asarray(x, dtype=object)
            M = _to_sym(x)
            if arr.ndim == 1:
                M = sp.ImmutableMatrix(M.reshape(1, M.rows * M.cols))
        if M.cols == n0:
            return [sp.ImmutableMatrix(M.row(r).T) for r in range(M.rows)], False
        if M.cols == 1 and M.rows == n0:
            import warnings

            warnings.warn(
                "a sympy column as the input of a CoordinateMLP is deprecated: rows are examples "
                f"(give a 1 × {n0} row, or an N × {n0} matrix), as for NumPy batches",
                DeprecationWarning, stacklevel=4)
            return [M], True
        raise DimensionError(
            f"symbolic inputs are rows (N, {n0}), one example per row as for NumPy batches, "
            f"got shape {tuple(M.shape)}")

    def _trace_column(self, a):
        abars, zs, acts = [], [], [a]
        for W, phi in zip(self.Wbars, self.activations):
            ab = sp.ImmutableMatrix(a.col_join(sp.ones(1, 1)))
            z = sp.ImmutableMatrix(_to_sym(W) * ab)
            a = phi(z)
            abars.append(ab)
            zs.append(z)
            acts.append(a)
        return abars, zs, acts

    def _check_input(self, n):
        if n != self.widths[0]:
            raise DimensionError(f"inputs have {n} features, the network expects {self.widths[0]}")

    def forward(self, x):
        """Network output ``a_L`` for a batch ``(N, n_0)`` (rows are examples): a numpy array,
        or a sympy matrix for a symbolic network or input, giving ``(N, n_L)``.

        A 1-D input is one example and gives a ``(1, n_L)`` output.

        >>> import sympy as sp
        >>> x = sp.Symbol("x")
        >>> net = CoordinateMLP([sp.Matrix([[2, 1, 5]])], ["identity"])   # z = 2 x₁ + x₂ + 5
        >>> net.forward(sp.Matrix([[x, 3], [1, 0]]))                   # two examples, two rows
        Matrix([
        [2*x + 8],
        [      7]])
        """
        return self.trace(x)[2][-1]

    __call__ = forward

    # ------------------------------------------------------------------ parameters
    def vector(self):
        """``w = [vec(W̄_1); …; vec(W̄_L)]`` (column-stacking); 1-D array or sympy column."""
        if self.symbolic:
            cols = [sp.ImmutableMatrix(W.T.reshape(W.shape[0] * W.shape[1], 1)) for W in self.Wbars]
            out = cols[0]
            for c in cols[1:]:
                out = out.col_join(c)
            return sp.ImmutableMatrix(out)
        return np.concatenate([W.reshape(-1, order="F") for W in self.Wbars])

    @property
    def param_counts(self) -> tuple[int, ...]:
        """Number of parameters ``n_i (n_{i-1} + 1)`` of each layer ``i = 1..L`` (the widths
        of the spaces are :attr:`widths`)."""
        return tuple(W.shape[0] * W.shape[1] for W in self.Wbars)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Deprecated name of :attr:`param_counts`."""
        import warnings

        warnings.warn("layer_sizes is deprecated: it is the number of parameters per layer, now "
                      "param_counts; the widths of the spaces are widths", DeprecationWarning,
                      stacklevel=2)
        return self.param_counts

    def with_vector(self, w) -> "CoordinateMLP":
        """Same architecture, weights from a stacked column-major vector."""
        sizes = np.cumsum((0,) + self.param_counts)
        if len(w) != sizes[-1]:
            raise DimensionError(f"parameter vector has {len(w)} entries, expected {sizes[-1]}")
        Ws = []
        for i, W in enumerate(self.Wbars):
            seg = w[sizes[i] : sizes[i + 1]]
            if is_symbolic(w):
                Ws.append(sp.ImmutableMatrix(_to_sym(seg).reshape(W.shape[1], W.shape[0]).T))
            else:
                Ws.append(np.asarray(seg, dtype=float).reshape(W.shape, order="F"))
        return CoordinateMLP(Ws, self.activations)

    def __repr__(self) -> str:
        acts = ", ".join(a.name for a in self.activations)
        kind = "symbolic" if self.symbolic else "numeric"
        return f"<CoordinateMLP widths={self.widths} activations=[{acts}] {kind}>"


# --------------------------------------------------------------------------- D.2 / D.3
def transform_weights(Wbar, change_in: LayerChange, change_out: LayerChange):
    """Eqn. D.2 solved for the new weights: ``W̄‡ = top rows of [Φ]_H⁻¹ [W̄; 0 1] [Ω]_H⁻¹``.

    ``change_in`` supplies ``(Ω_{i-1}, γ_{i-1})`` (its A side), ``change_out`` supplies
    ``(Φ_i, τ_i)`` (its Z side).

    >>> W = np.array([[1.0, 2.0, 3.0]])
    >>> transform_weights(W, LayerChange(Omega=2 * np.eye(2)), LayerChange())
    array([[0.5, 1. , 3. ]])
    """
    symbolic = is_symbolic(Wbar) or change_in.is_symbolic or change_out.is_symbolic
    out_dim, in1 = Wbar.shape
    in_dim = in1 - 1
    OH = change_in.omega_H(in_dim, symbolic)
    PH = change_out.phi_H(out_dim, symbolic)
    if symbolic:
        W = _to_sym(Wbar)
        Wh = W.col_join(sp.zeros(1, in_dim).row_join(sp.ones(1, 1)))
        if sp.simplify(OH.det()) == 0 or sp.simplify(PH.det()) == 0:
            raise SingularFrameChangeError("a change of frame in reparameterize is singular")
        new = PH.inv() * Wh * OH.inv()
        return sp.ImmutableMatrix(new[:out_dim, :])
    W = np.asarray(Wbar, dtype=float)
    Wh = np.vstack([W, np.eye(1, in1, in_dim)])
    for H, nm in ((OH, "Omega"), (PH, "Phi")):
        if np.linalg.cond(H) > 1e12:
            raise SingularFrameChangeError(
                f"{nm} is singular (condition number {np.linalg.cond(H):.3g}); "
                "a change of frame must be invertible"
            )
    new = np.linalg.solve(PH, Wh)
    new = np.linalg.solve(OH.T, new.T).T
    return new[:out_dim]


def _conjugate(phi: Activation, change: LayerChange) -> Activation:
    if not (change.changes_A or change.changes_Z):
        return phi
    return ConjugatedActivation(phi, change.Omega, change.gamma, change.Phi, change.tau)


def _reparameterize_coordinate_mlp(coord_net: CoordinateMLP, changes) -> CoordinateMLP:
    ch = normalize_changes(changes, coord_net.L)
    Ws, acts = [], []
    for i in range(1, coord_net.L + 1):
        Ws.append(transform_weights(coord_net.Wbars[i - 1], ch[i - 1], ch[i]))
        acts.append(_conjugate(coord_net.activations[i - 1], ch[i]))
    return CoordinateMLP(Ws, acts)


def reparameterize(net, changes, *legacy):
    """The same abstract network in changed frames (Eqns. D.2 and D.3): the one entry point
    for coordinate networks and the NumPy backend's networks.

    Parameters
    ----------
    net : CoordinateMLP, geomkfac.nn.MLP or geomkfac.nn.Sequential
        A Sequential of Dense, Conv2d, AvgPool2d, MaxPool2d, Flatten, RNN and LastStep layers
        (each layer kind's rule: :mod:`geomkfac.nn.reparam`).
    changes : dict ``{i: LayerChange}`` or sequence of ``L + 1`` LayerChange/None
        Keyed by the activation index ``i = 0..L`` (paper numbering: ``a_0`` the input,
        ``a_i`` the output of weight layer ``W_i``, ``i = 1..L``). ``0``: input change
        ``(Ω_0, γ_0)`` only; ``1 … L−1``: hidden changes ``(Ω_i, γ_i, Φ_i, τ_i)``; ``L``
        (optional): change of the output spaces, after which outputs are in the new
        coordinates ``Ω_L a_L + γ_L``.
    *legacy
        Deprecated: ``reparameterize(model, Omegas, gammas, Phis, taus)`` (per-space lists,
        the former signature of ``geomkfac.nn.reparameterize``) still works and warns.

    Returns
    -------
    CoordinateMLP, MLP or Sequential (the kind of ``net``)
        with ``f‡(Ω_0 x + γ_0) = Ω_L f(x) + γ_L``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> net = CoordinateMLP([rng.normal(size=(3, 3)), rng.normal(size=(1, 4))], ["sigmoid", "identity"])
    >>> net2 = reparameterize(net, {1: sigmoid_to_tanh(3)})
    >>> x = rng.normal(size=(5, 2))
    >>> bool(np.allclose(net2.forward(x), net.forward(x)))
    True

    The same ``changes`` on the NumPy backend's network:

    >>> from geomkfac.nn import MLP
    >>> model = MLP([2, 3, 1], "sigmoid", seed=0)
    >>> bool(np.allclose(reparameterize(model, {1: sigmoid_to_tanh(3)}).forward(x), model.forward(x)))
    True
    """
    if legacy:
        import warnings

        from geomkfac.nn.reparam import changes_from_arrays

        if len(legacy) != 3:
            raise ConfigurationError(
                "reparameterize(net, changes) takes a {i: LayerChange} mapping; the deprecated "
                "form is reparameterize(model, Omegas, gammas, Phis, taus)")
        warnings.warn(
            "reparameterize(model, Omegas, gammas, Phis, taus) is deprecated; pass "
            "reparameterize(model, {i: LayerChange(Omega, gamma, Phi, tau)}) keyed by the "
            "activation index i = 0..L", DeprecationWarning, stacklevel=2)
        changes = changes_from_arrays(changes, *legacy)
    if isinstance(net, CoordinateMLP):
        return _reparameterize_coordinate_mlp(net, changes)
    from geomkfac.nn.layers import Sequential
    from geomkfac.nn.model import MLP

    if isinstance(net, (MLP, Sequential)):
        from geomkfac.nn.reparam import reparameterize_network

        return reparameterize_network(net, changes)
    raise ConfigurationError(
        f"reparameterize takes a CoordinateMLP, a geomkfac.nn.MLP or a geomkfac.nn.Sequential, "
        f"got {type(net).__name__}; an AbstractMLP is reparameterized by choosing frames: "
        "net.reference_frames().derive(changes)")


# --------------------------------------------------------------------------- named changes
def _eye(n, symbolic, scale=1):
    return sp.ImmutableMatrix(sp.eye(n) * scale) if symbolic else np.eye(n) * float(scale)


def _full(n, v, symbolic):
    return sp.ImmutableMatrix(sp.ones(n, 1) * v) if symbolic else np.full(n, float(v))


def sigmoid_to_tanh(n: int, symbolic: bool = False) -> LayerChange:
    """Turns a sigmoid layer into a tanh layer: ``2 σ(2 z‡) − 1 = tanh(z‡)``.

    ``Ω = 2I, γ = −1, Φ = 2I, τ = 0`` (from ``σ(x) = ½ tanh(x/2) + ½``).

    >>> ch = sigmoid_to_tanh(2)
    >>> ch.Omega
    array([[2., 0.],
           [0., 2.]])
    """
    return LayerChange(
        Omega=_eye(n, symbolic, 2), gamma=_full(n, -1, symbolic), Phi=_eye(n, symbolic, 2)
    )


def tanh_to_sigmoid(n: int, symbolic: bool = False) -> LayerChange:
    """Turns a tanh layer into a sigmoid layer: ``½ tanh(z‡/2) + ½ = σ(z‡)``."""
    half = sp.Rational(1, 2) if symbolic else 0.5
    return LayerChange(
        Omega=_eye(n, symbolic, half), gamma=_full(n, half, symbolic), Phi=_eye(n, symbolic, half)
    )


def centering(mu) -> LayerChange:
    """Centre activations: ``a‡ = a − μ`` (``Ω = I, γ = −μ``).

    >>> centering(np.array([1.0, 2.0])).apply_activations(np.array([[1.0, 2.0]]))
    array([[0., 0.]])
    """
    if is_symbolic(mu):
        mu = as_sym_matrix(mu)
        return LayerChange(Omega=sp.ImmutableMatrix(sp.eye(mu.shape[0])), gamma=-mu)
    mu = np.asarray(mu, dtype=float).reshape(-1)
    return LayerChange(Omega=np.eye(mu.size), gamma=-mu)


def whitening(mean, cov) -> LayerChange:
    """Whiten activations: ``a‡ = Σ^{-1/2} (a − μ)`` (ZCA; symbolic: ``L⁻¹`` of Cholesky).

    >>> ch = whitening(np.zeros(2), np.diag([4.0, 1.0]))
    >>> ch.Omega
    array([[0.5, 0. ],
           [0. , 1. ]])
    """
    if is_symbolic(mean, cov):
        mean, cov = _to_sym(mean), _to_sym(cov)
        if cov.shape[0] != cov.shape[1] or cov.shape[0] != len(mean):
            raise DimensionError(f"whitening: need an n×n covariance and n means, got "
                                 f"{cov.shape} and {len(mean)}")
        if any(sp.simplify(e) != 0 for e in (cov - cov.T)):
            raise NotSymmetricError("whitening: the covariance is not symmetric; pass Σ = E[(a−μ)(a−μ)ᵀ]")
        Omega = sp.ImmutableMatrix(cov.cholesky(hermitian=False).inv())
        return LayerChange(Omega=Omega, gamma=sp.ImmutableMatrix(-Omega * mean))
    try:
        mean = np.asarray(mean, dtype=float).reshape(-1)
        cov = np.asarray(cov, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DimensionError(f"whitening: mean and covariance must be numeric arrays ({exc})") from None
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] != mean.shape[0] or not mean.size:
        raise DimensionError(f"whitening: need an n×n covariance and n means (n >= 1), got "
                             f"{cov.shape} and {mean.shape}")
    if not (np.all(np.isfinite(cov)) and np.all(np.isfinite(mean))):
        raise NonFiniteError("whitening: the mean or covariance contains NaN or inf")
    # symmetric up to round-off of the sums that formed it (relative 1e-10 of the largest entry)
    if not np.allclose(cov, cov.T, rtol=0.0, atol=1e-10 * max(np.abs(cov).max(), 1e-300)):
        raise NotSymmetricError("whitening: the covariance is not symmetric; pass Σ = E[(a−μ)(a−μ)ᵀ]")
    evals, U = np.linalg.eigh(cov)
    if evals.min() <= 1e-12 * max(evals.max(), 1.0):
        raise SingularFrameChangeError(
            f"whitening: covariance is singular (smallest eigenvalue {evals.min():.3g}); "
            "add a small multiple of I or drop constant units"
        )
    Omega = (U / np.sqrt(evals)) @ U.T
    return LayerChange(Omega=Omega, gamma=-Omega @ mean)


def unit_scaling(s) -> LayerChange:
    """Scale each unit: ``a‡ = diag(s) a`` (all ``s`` nonzero)."""
    if is_symbolic(s):
        s = as_sym_matrix(s)
        return LayerChange(Omega=sp.ImmutableMatrix(sp.diag(*s)))
    s = np.asarray(s, dtype=float).reshape(-1)
    if np.any(s == 0):
        raise SingularFrameChangeError("unit_scaling: every scale must be nonzero")
    return LayerChange(Omega=np.diag(s))


def permutation(perm) -> LayerChange:
    """Permute the units of a hidden layer: ``a‡_j = a_{perm[j]}``, ``z‡_j = z_{perm[j]}``.

    ``Ω = P`` and ``Φ = Pᵀ`` with ``P[j, perm[j]] = 1``; an elementwise activation is
    unchanged by it.

    >>> permutation([1, 0]).apply_activations(np.array([[1.0, 2.0]]))
    array([[2., 1.]])
    """
    perm = np.asarray(perm, dtype=int)
    n = perm.size
    if sorted(perm.tolist()) != list(range(n)):
        raise ConfigurationError(f"permutation: {perm.tolist()} is not a permutation of 0..{n - 1}")
    P = np.eye(n)[perm]
    return LayerChange(Omega=P, Phi=P.T)


def random_affine(n: int, rng, scale: float = 1.0, cond: float = 4.0) -> LayerChange:
    """A random non-diagonal affine change of both ``A_i`` and ``Z_i`` (well conditioned).

    ``Ω = U diag(s) V`` with Haar-random orthogonal ``U, V`` and singular values ``s`` in
    ``[1/√cond, √cond]``; likewise ``Φ``; shifts ``γ, τ ~ N(0, scale²)``.
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigurationError(f"random_affine: n must be a positive integer, got {n!r}")
    for what, v, lo in (("scale", scale, 0.0), ("cond", cond, 1.0)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not np.isfinite(v) or v < lo:
            raise ConfigurationError(f"random_affine: {what} must be a finite number >= {lo}, got {v!r}")
    try:
        rng = np.random.default_rng(rng)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"random_affine: rng must be a seed or a Generator ({exc})") from None

    def mat():
        U, _ = np.linalg.qr(rng.standard_normal((n, n)))
        V, _ = np.linalg.qr(rng.standard_normal((n, n)))
        s = np.exp(rng.uniform(-0.5, 0.5, n) * np.log(cond))
        return (U * s) @ V

    return LayerChange(
        Omega=mat(),
        gamma=scale * rng.standard_normal(n),
        Phi=mat(),
        tau=scale * rng.standard_normal(n),
    )
