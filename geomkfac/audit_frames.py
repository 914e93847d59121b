"""The two frames of the invariance audit (:mod:`geomkfac.audit`): the data, the network
in a changed frame, and optimizers run in changed weight coordinates.

* :func:`digits_problem` and :func:`build_network`: the embedded digits and the audited
  networks — an MLP on 2×2-pooled digits, a small CNN (two valid 3×3 convolutions and a
  dense layer) on the 8×8 images, an RNN reading the 8 rows of an image (pooled to 4
  features) as 8 time steps;
* :func:`activation_pair`: the same abstract network in frames changed by an affine change
  of every activation and pre-activation space below the output (Appendix D; for layer
  stacks Theorems 4.1 / 4.2: one change per channel space, shared by all locations and
  time steps), with the inputs in the new frame;
* :class:`WeightFrame` and :class:`CoordinateRule`: weight coordinates ``θ = r(u)``
  (a permutation of entries, §1, or a nonlinear map, §2.1) and an optimizer's rule applied
  to ``u``.
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError

__all__ = [
    "ARCHITECTURES",
    "RANDOM_AFFINE",
    "NONLINEAR_SCALE",
    "digits_problem",
    "build_network",
    "activation_pair",
    "WeightFrame",
    "CoordinateRule",
]

#: the audited architectures: layer strings of :func:`geomkfac.nn.architectures.build_model`
#: (the MLP's hidden widths are a parameter)
ARCHITECTURES = {"mlp": None, "cnn": "conv3k3-conv2k3-dense10", "rnn": "rnn6-last-dense10"}

#: the random affine changes: singular values of Ω, Φ in [1/√2, √2], shifts γ, τ ~ N(0, ½²)
#: (each space's change is mild, but they compound through the layers: the Fisher in the
#: second frame is worse conditioned than in the first by up to a few hundred)
RANDOM_AFFINE = dict(scale=0.5, cond=2.0)

#: s in the nonlinear weight coordinates θ = s·sinh(u/s)
NONLINEAR_SCALE = 1.0


# --------------------------------------------------------------------------- the data
def digits_problem(n_examples: int = 512, seed: int = 0, arch: str = "mlp"):
    """``n_examples`` of the embedded digits (a seeded choice) with one-hot targets for
    squared error, shaped for ``arch``:

    * ``"mlp"``: 2×2-average-pooled to 4×4 = 16 features, each centred;
    * ``"cnn"``: ``(N, 1, 8, 8)`` images, the mean pixel subtracted;
    * ``"rnn"``: ``(N, 8, 4)``, the 8 rows of an image as 8 time steps, each row pooled
      to 4 features (pairs of pixels; the first pixel of a row is almost always 0), each
      feature centred over examples and steps.

    The pooling keeps every MLP input feature non-constant, so the K-FAC factor
    ``A = E[ā āᵀ]`` of the first layer is invertible (several of the 64 raw pixels are almost
    always 0); centred inputs keep the undamped Fisher well enough conditioned for
    undamped natural gradient to train (raw inputs drive it into near-null directions).
    Every centring is a change of the input frame shared by locations / steps.

    >>> X, Y = digits_problem(10)
    >>> X.shape, Y.shape, float(Y.sum())
    ((10, 16), (10, 10), 10.0)
    >>> digits_problem(3, arch="rnn")[0].shape
    (3, 8, 4)
    """
    from geomkfac.nn.data import load_digits

    if arch not in ARCHITECTURES:
        raise ConfigurationError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    ds = load_digits("classification")
    n = len(ds.X)
    if isinstance(n_examples, bool) or not isinstance(n_examples, (int, np.integer)) \
            or not 1 <= n_examples <= n:
        raise ConfigurationError(f"n_examples must be a whole number in [1, {n}], got {n_examples!r}")
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:n_examples])
    X = ds.X[idx]
    if arch == "mlp":
        X = X.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16)
        X = X - X.mean(axis=0)
    elif arch == "cnn":
        X = (X - X.mean()).reshape(-1, 1, 8, 8)
    else:
        X = X.reshape(-1, 8, 4, 2).mean(axis=3)
        X = X - X.mean(axis=(0, 1))
    Y = np.eye(10)[np.asarray(ds.Y)[idx].astype(int)]
    return X, Y


def build_network(arch: str = "mlp", hidden=(8,), activation: str = "tanh", seed: int = 0):
    """The audited network: ``MLP([16, *hidden, 10])`` or the layer stack
    :data:`ARCHITECTURES` ``[arch]`` with the hidden ``activation`` and a linear output.

    >>> build_network("cnn")
    Sequential([Conv2d(1->3, k=3, pad=0, stride=1, tanh), Conv2d(3->2, k=3, pad=0, stride=1, tanh), Flatten(), Dense(32->10, identity)], dtype=float64)
    """
    from geomkfac.nn import MLP
    from geomkfac.nn.architectures import build_model

    if arch == "mlp":
        return MLP([16, *[int(h) for h in hidden], 10], activation, seed=seed)
    if arch not in ARCHITECTURES:
        raise ConfigurationError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return build_model(ARCHITECTURES[arch], (1, 8, 8) if arch == "cnn" else (8, 4), act=activation, seed=seed)


# --------------------------------------------------------------------------- the second frame
def _space_change(name, rows, rng, act_name, is_input):
    """The change of change kind ``name`` on one space whose points (in the reference frame)
    are the rows of ``rows``, or None. ``act_name``: the activation producing the space."""
    from geomkfac import reparam as rp

    n = rows.shape[1]
    if name == "centering":
        return rp.centering(rows.mean(axis=0))
    if name == "whitening":
        return rp.whitening(rows.mean(axis=0), np.cov(rows.T, bias=True).reshape(n, n))
    if name == "random_affine":
        return rp.random_affine(n, rng, **RANDOM_AFFINE)
    if name == "unit_scaling":
        return rp.unit_scaling(rng.choice([-1.0, 1.0], n) * np.exp(rng.uniform(-np.log(2), np.log(2), n)))
    if name == "sigmoid_tanh":  # hidden spaces only
        if is_input:
            return None
        if act_name == "tanh":
            return rp.tanh_to_sigmoid(n)
        if act_name == "sigmoid":
            return rp.sigmoid_to_tanh(n)
        raise ConfigurationError(f"sigmoid_tanh needs tanh or sigmoid hidden units, got {act_name!r}")
    raise ConfigurationError(f"{name!r} is not a change of activation frames")


_OTHER = {"tanh": "sigmoid", "sigmoid": "tanh"}


def _mlp_pair(name, model, X, rng):
    from geomkfac.nn import MLP, Dense
    from geomkfac.reparam import LayerChange, reparameterize

    L = len(model.layers)
    _, cache = model.forward_cache(X)
    acts = [X] + list(cache.a[:-1])
    changes = {}
    for i in range(L):
        ch = _space_change(name, acts[i], rng, i and model.layers[i - 1].activation.name, i == 0)
        if ch is not None:
            changes[i] = ch.on_A_only() if i == 0 else ch
    if name == "random_affine":  # the output layer's pre-activations too (output frame kept)
        ch = _space_change(name, np.zeros((1, model.sizes[L])), rng, None, False)
        changes[L] = LayerChange(Phi=ch.Phi, tau=ch.tau)
    net2 = reparameterize(model, changes)
    if name == "sigmoid_tanh":
        # the same weights (Eqn. D.2) with the plain named activation instead of the
        # conjugated one: σ(x) = ½ tanh(x/2) + ½ is then the only link between the two
        net2 = MLP.from_layers([Dense(l2.W, l2.b, _OTHER[l.activation.name] if i < L - 1
                                      else l.activation.name)
                                for i, (l, l2) in enumerate(zip(model.layers, net2.layers))])
    X2 = X if 0 not in changes else _apply_frame(X, changes[0])
    return net2, X2, changes


def _channel_rows(x):
    """The points of a channel / feature space as rows: ``(N, C, H, W)`` → ``(N·H·W, C)``,
    ``(N, T, d)`` → ``(N·T, d)``, ``(N, d)`` as is."""
    if x.ndim == 4:
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
    return x.reshape(-1, x.shape[-1])


def _apply_frame(x, ch):
    """Points ``x`` (channels on axis 1 for images, last otherwise) in the new frame."""
    Om = np.eye(x.shape[1] if x.ndim == 4 else x.shape[-1]) if ch.Omega is None else np.asarray(ch.Omega)
    ga = np.zeros(Om.shape[0]) if ch.gamma is None else np.asarray(ch.gamma)
    if x.ndim == 4:
        return np.einsum("ij,njhw->nihw", Om, x) + ga[None, :, None, None]
    return x @ Om.T + ga


def _stack_pair(name, model, X, rng):
    """:func:`activation_pair` for a :class:`~geomkfac.nn.Sequential`: one change per
    channel / hidden space (shared by all locations and steps, Theorems 4.1, 4.2), drawn
    from the points flowing through that space, then the one implementation of Eqns.
    D.2 / D.3 for layer stacks, :func:`geomkfac.reparam.reparameterize`."""
    from geomkfac.nn import RNN, Conv2d, Dense, Flatten, LastStep
    from geomkfac.reparam import LayerChange, reparameterize

    params = [l for l in model.layers if hasattr(l, "Wbar")]
    ch_in = _space_change(name, _channel_rows(X), rng, None, True) or LayerChange()
    changes = {0: ch_in.on_A_only()} if ch_in.changes_A else {}
    x, j = X, 0  # j: weight layers so far (the activation index of the layer's output)
    for layer in model.layers:
        y, _ = layer.forward(x)
        if isinstance(layer, (Conv2d, Dense, RNN)):
            j += 1
            if layer is params[-1]:  # the output frame is kept; its pre-activations may change
                if name == "random_affine":
                    z = _space_change(name, np.zeros((1, layer.W.shape[0])), rng, None, False)
                    changes[j] = LayerChange(Phi=z.Phi, tau=z.tau)
            else:
                out = _space_change(name, _channel_rows(y), rng, layer.activation.name, False)
                if out is not None and (out.changes_A or out.changes_Z):
                    changes[j] = out
        elif not isinstance(layer, (Flatten, LastStep)):
            raise ConfigurationError(f"the audit cannot change frames across {layer!r} "
                                     "(pooling does not commute with affine changes of channels)")
        x = y
    net2 = reparameterize(model, changes)
    if name == "sigmoid_tanh":
        # the same weights (Eqn. D.2) with the plain named activation instead of the
        # conjugated one, as for the MLP
        from geomkfac.nn.activations import get_activation

        for l, l2 in zip(params[:-1], [l for l in net2.layers if hasattr(l, "Wbar")][:-1]):
            l2.activation = get_activation(_OTHER[l.activation.name])
    X2 = _apply_frame(X, changes[0]) if 0 in changes else X
    return net2, X2, changes


def activation_pair(name, model, X, rng, return_changes=False):
    """The network ``model`` in frames changed by ``name`` (one of ``centering``,
    ``whitening``, ``random_affine``, ``unit_scaling``, ``sigmoid_tanh``) on every space
    below the output, and the inputs ``X`` in the new input frame: ``(net2, X2)`` with
    ``net2(X2) = model(X)`` up to round-off.  Means and covariances are the data's, taken
    in the reference frame; random changes are drawn from ``rng``.

    >>> import numpy as np
    >>> X, _ = digits_problem(20, arch="rnn")
    >>> net = build_network("rnn")
    >>> net2, X2 = activation_pair("random_affine", net, X, np.random.default_rng(0))
    >>> bool(np.abs(net2.forward(X2) - net.forward(X)).max() < 1e-12)
    True

    With ``return_changes=True`` the changes are returned too, as ``{i: LayerChange}`` keyed
    by the activation index ``i = 0..L`` (the convention of
    :func:`geomkfac.reparam.reparameterize`).
    """
    from geomkfac.nn import MLP

    net2, X2, changes = (_mlp_pair if isinstance(model, MLP) else _stack_pair)(name, model, X, rng)
    return (net2, X2, changes) if return_changes else (net2, X2)


class WeightFrame:
    """Weight coordinates ``u`` with ``θ = r(u)``: a permutation of the entries of every
    layer's ``vec W̄`` (``kind="permutation"``), the elementwise ``θ = s·sinh(u/s)``
    (``kind="nonlinear"``) or the identity (``kind="identity"``, the check of the rules).

    >>> import numpy as np
    >>> fr = WeightFrame("nonlinear", [(2, 3)], np.random.default_rng(0))
    >>> th = np.linspace(-1, 1, 6)
    >>> bool(np.allclose(fr.theta(fr.u_of(th)), th))
    True
    """

    def __init__(self, kind, shapes, rng):
        self.kind = kind
        self.shapes = [tuple(sh) for sh in shapes]
        sizes = [r * c for r, c in shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        P = sum(sizes)
        if kind == "permutation":
            perm, o = [], 0
            for shape, n in zip(shapes, sizes):
                perm.append(o + _non_structured_permutation(rng, shape))
                o += n
            self.perm = np.concatenate(perm)
        elif kind in ("identity", "nonlinear"):
            self.perm = np.arange(P)
        else:
            raise ConfigurationError(f"unknown weight frame {kind!r}")
        self.inv = np.argsort(self.perm)

    def u_of(self, theta):
        """``u = r⁻¹(θ)``: ``u_k = θ_{perm[k]}``, or ``s·asinh(θ/s)``."""
        if self.kind == "nonlinear":
            return NONLINEAR_SCALE * np.arcsinh(theta / NONLINEAR_SCALE)
        return theta[self.perm]

    def theta(self, u):
        """``θ = r(u)``."""
        if self.kind == "nonlinear":
            return NONLINEAR_SCALE * np.sinh(u / NONLINEAR_SCALE)
        return u[self.inv]

    def jacobian(self, u):
        """The dense ``J = ∂θ/∂u`` (P×P)."""
        if self.kind == "nonlinear":
            return np.diag(np.cosh(u / NONLINEAR_SCALE))
        return np.eye(u.size)[self.inv]

    def pull_layer(self, i, u, vecs):
        """``Jᵀ`` on layer ``i``'s block (every change here keeps the layers apart): covectors
        ``vecs`` ``(..., n_i)`` in θ order of the layer → its ``u`` coordinates."""
        o, e = self.offsets[i], self.offsets[i + 1]
        if self.kind == "nonlinear":
            return vecs * np.cosh(u[o:e] / NONLINEAR_SCALE)
        return vecs[..., self.perm[o:e] - o]


def _non_structured_permutation(rng, shape):
    """A permutation of ``vec`` of a ``shape`` matrix that moves entries across both rows and
    columns (so it is no permutation of units), as in the §1 proof."""
    r, c = shape
    if r * c < 4 or min(r, c) < 2:
        return rng.permutation(r * c)
    while True:
        perm = rng.permutation(r * c)
        M = perm.reshape(shape, order="F")
        rows_kept = all(len(set((M[i] % r).tolist())) == 1 for i in range(r))
        cols_kept = all(len(set((M[:, j] // r).tolist())) == 1 for j in range(c))
        if not rows_kept and not cols_kept:
            return perm


class CoordinateRule:
    """The rule of optimizer ``rule`` (with hyperparameters ``hyper``) applied to the weight coordinates ``u`` of a
    :class:`WeightFrame` (``θ = r(u)``, ``J = ∂θ/∂u``), training ``model`` in place:

    * ``sgd``: ``u ← u − lr Jᵀ∇h``; ``adam``: Adam on ``Jᵀ∇h``;
    * ``diag_fisher``: ``u ← u − lr Jᵀ∇h / (diag(JᵀFJ) + λ)`` with the Fisher ``F`` (GGN);
    * ``ngd``: ``u ← u − lr (JᵀFJ + λI)⁻¹ Jᵀ∇h``;
    * ``kfac``: ``u ← u − lr (A ⊗ G + λI)⁻¹ Jᵀ∇h`` per layer, the factors of the
      layer as it computes (an implementation storing ``u`` applies them to its gradient;
      the exact Fisher, no moving average, every step: ``fisher="exact"``, ``ema_decay=0``,
      ``damping_mode="exact"`` of the shipped K-FAC);
    * ``ekfac``: per layer ``Q_G [(Q_Gᵀ D_u Q_A) / (S_u + λ)] Q_Aᵀ`` with the Kronecker
      eigenbases of ``A`` and ``G`` and the scalings ``S_u = E[(Q_Gᵀ M_u Q_A)²]`` of the
      per-example, per-location gradient matrices ``M = Dz āᵀ`` read in ``u`` (``M_u =
      unvec(Jᵀ vec M)``), recomputed every step (exact Fisher, no moving average).
    """

    RULES = ("sgd", "adam", "diag_fisher", "ngd", "kfac", "ekfac")

    def __init__(self, rule, hyper, model, loss, frame):
        if rule not in self.RULES:
            raise ConfigurationError(f"no coordinate rule for optimizer {rule!r}; there are rules "
                                     f"for {', '.join(self.RULES)}")
        self.key, self.model, self.loss, self.frame = rule, model, loss, frame
        self.hyper = dict(hyper)
        self.u = frame.u_of(model.get_flat())
        self.m = self.v = None
        self.t = 0

    def step(self, X, Y):
        from geomkfac.nn import ggn, kfac_factors, kfac_solve, loss_and_grad

        h, key = self.hyper, self.key
        self.model.set_flat(self.frame.theta(self.u))
        _, g = loss_and_grad(self.model, X, Y, self.loss)
        J = self.frame.jacobian(self.u)
        gu = J.T @ g
        lr = float(h["lr"])
        if key == "sgd":
            du = -lr * gu
        elif key == "adam":
            self.t += 1
            b1, b2 = float(h.get("beta1", 0.9)), float(h.get("beta2", 0.999))
            self.m = (1 - b1) * gu if self.m is None else b1 * self.m + (1 - b1) * gu
            self.v = (1 - b2) * gu * gu if self.v is None else b2 * self.v + (1 - b2) * gu * gu
            du = -lr * (self.m / (1 - b1 ** self.t)) / (np.sqrt(self.v / (1 - b2 ** self.t)) + float(h.get("eps", 1e-8)))
        elif key in ("diag_fisher", "ngd"):
            Fu = J.T @ ggn(self.model, X, Y, self.loss) @ J
            lam = float(h["damping"])
            if key == "diag_fisher":
                du = -lr * gu / (np.diag(Fu) + lam)
            else:
                du = -lr * np.linalg.solve(Fu + lam * np.eye(Fu.shape[0]), gu)
        elif key == "ekfac":
            du = -lr * self._ekfac(X, g, float(h["damping"]))
        else:  # kfac (exact factors, exact damping)
            factors = kfac_factors(self.model, X, None, self.loss, fisher="exact")
            du = -lr * kfac_solve(factors, gu, float(h["damping"]))
        self.u = self.u + du
        self.model.set_flat(self.frame.theta(self.u))

    def _ekfac(self, X, g, lam):
        from geomkfac.nn.losses import loss_for_model
        from geomkfac.nn.optim.kronecker import safe_eigh
        from geomkfac.nn.optim.statistics import backprop_samples

        model, frame = self.model, self.frame
        f, cache = model.forward_cache(X)
        N = f.shape[0]
        Dzs, w = backprop_samples(model, cache, f, None, loss_for_model(model, self.loss), "exact",
                                  None)
        out = []
        for i, (D, ab, T) in enumerate(zip(Dzs, cache.abar, cache.T)):
            D2 = D.reshape(-1, D.shape[-1])
            QA = safe_eigh((ab.T @ ab) / N, None).Q
            QG = safe_eigh((w / T) * (D2.T @ D2), None).Q
            r, c = frame.shapes[i]
            # per (sample, example, location) gradient matrices Dz āᵀ, vec'd (column-stacking)
            M = np.einsum("kro,ri->krio", D, ab).reshape(-1, r * c)
            Mu = frame.pull_layer(i, self.u, M).reshape(-1, c, r).transpose(0, 2, 1)
            S = w * np.square(np.einsum("og,nop,pa->nga", QG, Mu, QA, optimize=True)).sum(axis=0)
            o, e = frame.offsets[i], frame.offsets[i + 1]
            Du = frame.pull_layer(i, self.u, g[o:e]).reshape(r, c, order="F")
            P = (QG.T @ Du @ QA) / (S + lam)
            out.append((QG @ P @ QA.T).reshape(-1, order="F"))
        return np.concatenate(out)


