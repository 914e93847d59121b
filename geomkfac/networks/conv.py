"""The abstract convolutional network and its coordinate networks (paper §4.1, Appendix F).

An abstract convolution layer (Appendix F.1.2) is built from

* a *local* activation space ``A`` (dimension ``J``, the channels at one location) and the
  activations of a whole feature map, a point of the power ``A^|T_in|`` (one factor per
  input location, row-major);
* the patch space ``P = A^|Δ|`` (one factor per kernel offset ``δ = (dy, dx)``, row-major)
  and the **patch map** ``A^|T_in| → P^|T|``, an affine map: the factor ``(t, δ)`` of its
  value is the input at location ``t + δ``, or, outside the image, the **padding point**, a
  point of ``A`` (the origin of ``A``'s reference frame).  In another frame of ``A`` that
  point has the coordinates ``γ``, so a border patch is padded with ``γ``, not with zeros
  (:meth:`AbstractCNN.patch_map`, :meth:`AbstractCNN.padding_point`);
* the local pre-activation space ``Z`` (dimension ``I``) and the weight space
  ``W = Aff(P, Z)``, one affine map shared by every location; applied at every location it
  gives the pre-activations in ``Z^|T|``: in coordinates ``Z = W A^exp + b 1ᵀ`` (F.1–F.3),
  the columns of ``A^exp`` being the patches;
* an activation ``φ : Z → A'`` applied at every location (elementwise in the reference
  frames; conjugated as in Eqn. D.3 in other frames, the same at every location).

Average pooling is an affine map ``A^|T| → A^|T'|`` (a barycentre of points of ``A`` is a
point of ``A``): its matrix ``P_avg ⊗ I`` is the same in every power frame.  Max pooling is
not affine; it is only defined on coordinates, and its coordinate expression is the same
max in every frame, which is a *different* abstract map in each (the control of Thm 4.1).
Flatten identifies ``A^|T|`` with the input space of a dense layer ``Aff(A^|T|, Z)``.

Coordinate conventions (this module)
------------------------------------
* Locations ``t`` row-major; offsets ``δ = (dy, dx)`` row-major (``δ = dy·k + dx``).
* A patch's coordinates in the power frame of a frame on ``A`` are **offset-major**:
  ``[a(δ₀); a(δ₁); …]`` with each ``a(δ)`` the ``J`` channel coordinates, index ``δ·J + j``;
  ``ā = [patch; 1]``.  A change ``a‡ = Ω a + γ`` on ``A`` acts on a patch as
  ``[[I_|Δ| ⊗ Ω, 1_|Δ| ⊗ γ], [0, 1]]`` (Eqn. B.1 with one homogeneous 1; F.4).
* Conv weights ``W̄ = [W b]`` with ``W`` of shape ``(I, |Δ|·J)`` in that order, ``vec(W̄)``
  column-stacking (the weight space's induced frame, as for dense layers).
* Feature maps as arrays: ``(N, |T|, C)`` (location-major); flatten gives index ``t·C + c``.
* The reference files of independent libraries (``tests/oracle``) order a patch
  **channel-major** ``(j, dy, dx)``, index ``j·|Δ| + δ``, with ``W̄ = [W.reshape(I, J·k·k) b]``,
  and flatten channel-major ``c·|T| + t``.  :func:`patch_permutation` and
  :func:`flatten_permutation` convert; in channel-major order the same change of frame is
  ``Ω ⊗ I_|Δ|`` (with ``γ ⊗ 1``).  :func:`geomkfac.networks.conv_kfac.oracle_kfac_factors`
  returns ``(A, G, T)`` per layer in the reference files' convention.

The K-FAC metric of the network through the abstract pipeline (Def. F.2, Eqns. F.5/F.6) is
in :mod:`geomkfac.networks.conv_kfac`.

Layers are numbered as in the paper (:mod:`geomkfac.numbering`): the parametrized (conv and
dense) layers ``i = 1..L`` with their spaces ``Z_i`` (named ``<name>.Z<i>``), ``P_i`` (a conv
layer's patch space, ``<name>.P<i>``) and ``W_i``; the local activation spaces ``A_0..A_L``
(``A_0`` the input, ``A_i`` the output of layer ``i``).  Every method that takes a layer
number takes ``i = 1..L``; the lists :attr:`AbstractCNN.Z`, :attr:`AbstractCNN.weight_spaces`,
:attr:`AbstractCNN.layer_inputs` and the per-layer results keep Python's positions (position
``i - 1`` holds layer ``i``) and read by the paper's number with ``.layer(i)``.  Pooling and
flatten have no weights and no number: a position in the architecture list is ``arch[k]``.
The reference files key their arrays from 0 (``W0``, ``b0`` are layer 1's).

Examples
--------
>>> import numpy as np
>>> net = AbstractCNN((1, 3, 3), [{"type": "conv", "out": 2, "k": 2, "pad": 0, "act": "tanh"},
...                               {"type": "flatten"},
...                               {"type": "dense", "out": 1, "act": "identity"}], name="doc")
>>> net.weight_spaces.layer(1).dim, net.weight_spaces.layer(2).dim, net.layers[0].T
(10, 9, 4)
>>> net.Z.layer(1).name, net.layer_inputs.layer(1).name    # the first conv layer's Z_1 and P_1
('doc.Z1', 'doc.P1')
>>> rng = np.random.default_rng(0)
>>> w = net.random_weights(rng)
>>> X = rng.normal(size=(5, 1, 3, 3))
>>> ref = net.reference_frames()
>>> kappa = ref.derive(A={0: (np.array([[2.0]]), np.array([0.5])),
...                       1: (np.array([[1., 1.], [0., 1.]]), np.array([0.1, -0.2]))})
>>> f, f_kappa = net.forward(w, X, ref), net.forward(w, X, kappa)
>>> bool(np.allclose(f, f_kappa))            # one abstract network, two coordinate networks
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import sympy as sp

from geomkfac import display as _display
from geomkfac.activations_sym import Activation, ConjugatedActivation, get_activation
from geomkfac.errors import ConfigurationError, DataError, DimensionError, SpaceMismatchError
from geomkfac.fields import field_of
from geomkfac.maps import AffineMap, AffineMaps, SmoothMap
from geomkfac.numbering import LayerList, LayerTuple, check_layer
from geomkfac.pipeline import activation_map
from geomkfac.spaces import AffineSpace, Frame, Point, ProductSpace, power_frame

__all__ = [
    "ConvGeometry",
    "PoolGeometry",
    "AbstractCNN",
    "CNNFrames",
    "CoordinateCNN",
    "patch_permutation",
    "flatten_permutation",
    "layer_input_permutation",
    "to_oracle_weights",
    "from_oracle_weights",
    "oracle_theta",
]


# =========================================================================== geometry
class ConvGeometry:
    """Stride-1 ``k × k`` convolution with zero padding ``pad`` on an ``H × W`` grid.

    ``source[t, δ]`` is the input location (row-major index) read by output location ``t``
    at offset ``δ``, or ``-1`` where the patch leaves the image (padding).

    >>> g = ConvGeometry((3, 3), 2, 0)
    >>> g.out_hw, g.T, g.K
    ((2, 2), 4, 4)
    >>> g.source[3].tolist()                  # location (1, 1): inputs (1,1), (1,2), (2,1), (2,2)
    [4, 5, 7, 8]
    >>> ConvGeometry((2, 2), 3, 1).source[0].tolist()
    [-1, -1, -1, -1, 0, 1, -1, 2, 3]
    """

    def __init__(self, in_hw, k: int, pad: int):
        H, W = (int(v) for v in in_hw)
        k, pad = int(k), int(pad)
        if k < 1:
            raise DimensionError(f"a convolution needs a kernel size k >= 1, got {k}")
        if pad < 0:
            raise DimensionError(f"zero padding must be >= 0, got {pad}")
        Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
        if Ho < 1 or Wo < 1:
            raise DimensionError(
                f"kernel {k}×{k} is larger than the padded input {H + 2 * pad}×{W + 2 * pad} "
                f"({H}×{W} with padding {pad}); use a smaller kernel or more padding")
        self.in_hw, self.k, self.pad = (H, W), k, pad
        self.out_hw = (Ho, Wo)
        self.T, self.K, self.T_in = Ho * Wo, k * k, H * W
        self.offsets = [(dy, dx) for dy in range(k) for dx in range(k)]
        src = np.full((self.T, self.K), -1, dtype=np.int64)
        for y in range(Ho):
            for x in range(Wo):
                for d, (dy, dx) in enumerate(self.offsets):
                    iy, ix = y + dy - pad, x + dx - pad
                    if 0 <= iy < H and 0 <= ix < W:
                        src[y * Wo + x, d] = iy * W + ix
        self.source = src

    def __repr__(self) -> str:
        return f"ConvGeometry({self.in_hw} → {self.out_hw}, k={self.k}, pad={self.pad})"


class PoolGeometry:
    """Non-overlapping ``s × s`` pooling windows (stride ``s``) on an ``H × W`` grid.

    >>> PoolGeometry((4, 4), 2).windows[1].tolist()
    [2, 3, 6, 7]
    """

    def __init__(self, in_hw, s: int):
        H, W = (int(v) for v in in_hw)
        s = int(s)
        if s < 1 or H % s or W % s:
            raise DimensionError(
                f"pooling windows of size {s} must tile the {H}×{W} grid (s >= 1 dividing both sides)")
        self.in_hw, self.s = (H, W), s
        self.out_hw = (H // s, W // s)
        self.T, self.T_in = self.out_hw[0] * self.out_hw[1], H * W
        win = np.zeros((self.T, s * s), dtype=np.int64)
        for y in range(H // s):
            for x in range(W // s):
                win[y * (W // s) + x] = [(y * s + a) * W + (x * s + b) for a in range(s) for b in range(s)]
        self.windows = win

    def __repr__(self) -> str:
        return f"PoolGeometry({self.in_hw} → {self.out_hw}, s={self.s})"


# =========================================================================== layers
@dataclass
class _Layer:
    kind: str                  # conv | avgpool | maxpool | flatten | dense
    a_in: int                  # index of the local activation space read
    a_out: int                 # index of the local activation space written
    grid_in: tuple | None      # (H, W) of the input grid (None: a plain vector)
    grid_out: tuple | None
    geom: object = None        # ConvGeometry | PoolGeometry
    layer: int | None = None   # the weight layer's number i = 1..L (None: pooling, flatten)
    activation: Activation | None = None

    @property
    def T(self) -> int:
        """Number of output locations sharing the weights (1 for a dense layer)."""
        if self.kind == "conv":
            return self.geom.T
        return 1


def _grid_T(grid) -> int:
    return 1 if grid is None else grid[0] * grid[1]


class AbstractCNN(_display.Displayable):
    """An abstract convolutional network (Appendix F.1.2): spaces, weight spaces, maps.

    Parameters
    ----------
    in_shape : (C, H, W)
    arch : sequence of dict
        ``{"type": "conv", "out": I, "k": k, "pad": p, "act": a}`` (stride 1),
        ``{"type": "avgpool", "k": s}``, ``{"type": "maxpool", "k": s}``,
        ``{"type": "flatten"}``, ``{"type": "dense", "out": e, "act": a}``.  A conv entry may
        carry ``"in"`` and a dense entry ``"in"`` (checked), as in the reference files.
    name : str

    Attributes
    ----------
    A : list of AffineSpace
        The local activation spaces ``A_0..A_L`` (``A[0]`` the input's, ``A[i]`` the output of
        layer ``i``).
    Z, weight_spaces, layer_inputs : LayerList
        Per parametrized layer ``i = 1..L`` (position ``i - 1`` holds layer ``i``;
        ``.layer(i)`` reads it): ``Z_i``, ``W_i = Aff(P_i, Z_i)`` and ``P_i`` (``A^|Δ|`` for a
        convolution, the flattened input space for a dense layer).
    layers : list
        One record per entry of ``arch`` (kind, spaces, geometry, activation; ``.layer`` the
        weight layer's number ``i``, ``None`` for pooling and flatten).
    params : LayerList
        The records of the parametrized layers (position ``i - 1`` holds layer ``i``).
    weight_space : ProductSpace
        ``W_1 × … × W_L``.
    """

    def __init__(self, in_shape, arch: Sequence[dict], name: str = "cnn"):
        if len(in_shape) != 3 or min(int(v) for v in in_shape) < 1:
            raise DimensionError(f"in_shape must be (C, H, W) with positive sizes, got {tuple(in_shape)}")
        C, H, W = (int(v) for v in in_shape)
        self.name, self.in_shape = name, (C, H, W)
        self.A = [AffineSpace(C, f"{name}.A0")]
        self.Z, self.weight_spaces, self.layers, self.layer_inputs = [], [], [], []
        cur, grid, flat = 0, (H, W), False
        for n, spec in enumerate(arch):
            if not isinstance(spec, dict) or "type" not in spec:
                raise ConfigurationError(f"arch[{n}] must be a dict with a 'type', got {spec!r}")
            kind = spec["type"]
            if kind in ("conv", "avgpool", "maxpool") and flat:
                raise ConfigurationError(f"arch[{n}] ({kind}) comes after flatten/dense; spatial layers need a grid")
            if kind == "conv":
                J = self.A[cur].dim
                i = len(self.Z) + 1
                if "in" in spec and int(spec["in"]) != J:
                    raise DimensionError(f"arch[{n}] (layer {i}): conv expects {spec['in']} input channels, "
                                         f"the input has {J}")
                geom = ConvGeometry(grid, spec.get("k", 3), spec.get("pad", 0))
                I = int(spec["out"])
                P = ProductSpace((self.A[cur],) * geom.K, name=f"{name}.P{i}")
                self.Z.append(AffineSpace(I, f"{name}.Z{i}"))
                self.weight_spaces.append(AffineMaps(P, self.Z[-1]))
                self.A.append(AffineSpace(I, f"{name}.A{len(self.A)}"))
                rec = _Layer("conv", cur, len(self.A) - 1, grid, geom.out_hw, geom, i,
                             get_activation(spec.get("act", "identity")))
                self.layer_inputs.append(P)
                cur, grid = len(self.A) - 1, geom.out_hw
            elif kind in ("avgpool", "maxpool"):
                geom = PoolGeometry(grid, spec.get("k", 2))
                rec = _Layer(kind, cur, cur, grid, geom.out_hw, geom)
                grid = geom.out_hw
            elif kind == "flatten":
                if flat:
                    raise ConfigurationError(f"arch[{n}]: flatten after flatten/dense")
                rec = _Layer("flatten", cur, cur, grid, None)
                flat = True
            elif kind == "dense":
                if not flat:
                    raise ConfigurationError(f"arch[{n}]: a dense layer needs a flatten before it")
                D = self._flat_space(cur, grid)
                i = len(self.Z) + 1
                if "in" in spec and int(spec["in"]) != D.dim:
                    raise DimensionError(f"arch[{n}] (layer {i}): dense expects {spec['in']} inputs, "
                                         f"the flattened input has {D.dim}")
                self.Z.append(AffineSpace(int(spec["out"]), f"{name}.Z{i}"))
                self.weight_spaces.append(AffineMaps(D, self.Z[-1]))
                self.A.append(AffineSpace(int(spec["out"]), f"{name}.A{len(self.A)}"))
                rec = _Layer("dense", cur, len(self.A) - 1, grid, None, None, i,
                             get_activation(spec.get("act", "identity")))
                self.layer_inputs.append(D)
                cur, grid = len(self.A) - 1, None
            else:
                raise ConfigurationError(
                    f"arch[{n}]: unknown type {kind!r}; use conv, avgpool, maxpool, flatten or dense")
            self.layers.append(rec)
        if not self.Z:
            raise ConfigurationError("the architecture has no parametrized layer (conv or dense)")
        self.out_index, self.out_grid = cur, grid
        self.output_space = self._flat_space(cur, grid)
        self.Z, self.weight_spaces, self.layer_inputs = (LayerList(self.Z), LayerList(self.weight_spaces),
                                                         LayerList(self.layer_inputs))
        self.weight_space = ProductSpace(tuple(self.weight_spaces), name=f"{name}.W")
        self.params = LayerList(r for r in self.layers if r.layer is not None)
        self._reference = None

    def _flat_space(self, a_idx, grid):
        return self.A[a_idx] if grid is None else ProductSpace((self.A[a_idx],) * _grid_T(grid))

    @classmethod
    def from_oracle(cls, in_shape, arch, Ws, bs, name: str = "cnn"):
        """``(net, weights)`` from the reference files' layout: ``arch`` as there (a list of
        dicts or its JSON string), ``Ws[i - 1]`` ``(I, J, k, k)`` or ``(e, d)`` (channel-major
        flatten), ``bs[i - 1]`` for layer ``i``; the weights as a Point
        (reference frames)."""
        if isinstance(arch, str):
            import json

            arch = json.loads(arch)
        net = cls(in_shape, arch, name=name)
        return net, net.weights_from(from_oracle_weights(net, Ws, bs))

    @property
    def L(self) -> int:
        """Number of parametrized layers."""
        return len(self.Z)

    def reference_frames(self) -> "CNNFrames":
        """The reference frame of every space (cached)."""
        if self._reference is None:
            self._reference = CNNFrames(self, [a.reference_frame for a in self.A],
                                        [z.reference_frame for z in self.Z])
        return self._reference

    def _frames(self, frames):
        if frames is None:
            return self.reference_frames()
        if not isinstance(frames, CNNFrames) or frames.net is not self:
            raise SpaceMismatchError(f"frames must be CNNFrames of {self.name}, got {frames!r}")
        return frames

    # ------------------------------------------------------------ abstract maps (F.1.2)
    def padding_point(self, a_idx: int) -> Point:
        """The padding point of ``A[a_idx]``: the origin of its reference frame (a Point)."""
        A = self.A[a_idx]
        return Point(A.reference_frame, np.zeros(A.dim))

    def patch_map(self, i: int, frame_A: Frame | None = None, padding: str = "point") -> AffineMap:
        """The patch map ``A^|T_in| → P_i^|T|`` of conv layer ``i`` (``i = 1..L``, an :class:`AffineMap`).

        Built in the power frames of ``frame_A`` (default: the reference frame): linear part
        the 0/1 selection ``S`` (``I_J`` blocks), offset the padding point's coordinates in
        ``frame_A`` at every ``(t, δ)`` outside the image.  ``padding="zeros"`` pads with the
        coordinates 0 instead (a *different* map unless ``frame_A`` fixes the padding point:
        the negative control of Thm 4.1).

        >>> net = AbstractCNN((1, 2, 2), [{"type": "conv", "out": 1, "k": 2, "pad": 1}])
        >>> A = net.A[0]
        >>> kappa = A.reference_frame.derive([[2.0]], [3.0])
        >>> m = net.patch_map(1)
        >>> m.matrix(power_frame(kappa, 4), power_frame(power_frame(kappa, 4), 9))[0]  # law D.2
        array([0., 0., 0., 0., 3.])
        """
        rec = self._param_layer(i, "conv")
        fA = frame_A or self.A[rec.a_in].reference_frame
        S, b = self._patch_parts(i, fA, padding)
        geom = rec.geom
        return AffineMap(power_frame(fA, geom.T_in), power_frame(power_frame(fA, geom.K), geom.T), S, b)

    def location_patch_maps(self, i: int, frame_A: Frame | None = None, padding: str = "point") -> list:
        """The factors of :meth:`patch_map` of conv layer ``i``: for every location ``t`` the
        affine map ``A^|T_in| → A^|Δ|`` that cuts out the patch at ``t`` (padding as there)."""
        rec = self._param_layer(i, "conv")
        fA = frame_A or self.A[rec.a_in].reference_frame
        S, b = self._patch_parts(i, fA, padding)
        geom, J = rec.geom, fA.space.dim
        n = geom.K * J
        fin, fP = power_frame(fA, geom.T_in), power_frame(fA, geom.K)
        return [AffineMap(fin, fP, S[t * n:(t + 1) * n, :], b[t * n:(t + 1) * n, :] if isinstance(b, sp.MatrixBase)
                          else b[t * n:(t + 1) * n]) for t in range(geom.T)]

    def _patch_parts(self, i, fA, padding):
        """``(S, b)`` of the patch map of layer ``i`` in the power frames of ``fA`` (see :meth:`patch_map`)."""
        rec = self.params.layer(i)
        geom, J = rec.geom, self.A[rec.a_in].dim
        if padding == "point":
            pad = self.padding_point(rec.a_in).coords(fA)
        elif padding == "zeros":
            pad = np.zeros(J)
        else:
            raise ConfigurationError(f"padding must be 'point' or 'zeros', got {padding!r}")
        field = field_of(pad)
        src = geom.source.reshape(-1)
        inside = src >= 0
        S = np.zeros((src.size, J, geom.T_in, J))
        r = np.flatnonzero(inside)
        S[r, :, src[r], :] = np.eye(J)
        S = S.reshape(src.size * J, geom.T_in * J)
        mask = (~inside).astype(int)
        if field.symbolic:
            padv = sp.ImmutableMatrix(pad)
            return sp.ImmutableMatrix(S.astype(int)), sp.ImmutableMatrix(sp.Matrix.vstack(*[padv * int(m) for m in mask]))
        return S, np.kron(mask, np.asarray(pad, dtype=float))

    def pool_map(self, k: int, frame_A: Frame | None = None) -> AffineMap:
        """Average pooling ``arch[k]`` (position ``k`` in the architecture list, 0-based: a
        pooling layer has no weights and no layer number) as an affine map ``A^|T| → A^|T'|``,
        matrix ``P_avg ⊗ I_J`` with zero offset in the power frames of ``frame_A``."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(self.layers):
            raise ConfigurationError(f"{self.name} has arch[0..{len(self.layers) - 1}], got {k!r}")
        rec = self.layers[k]
        if rec.kind != "avgpool":
            raise ConfigurationError(f"arch[{k}] is {rec.kind}, not avgpool")
        fA = frame_A or self.A[rec.a_in].reference_frame
        return AffineMap(power_frame(fA, rec.geom.T_in), power_frame(fA, rec.geom.T),
                         _avg_matrix(rec.geom, fA.space.dim, fA.field.symbolic))

    def _param_layer(self, i: int, kind: str | None = None) -> _Layer:
        """The record of weight layer ``i = 1..L`` (checked; of ``kind`` if given)."""
        i = check_layer(i, self.L, f"the parametrized layers of {self.name}")
        rec = self.params[i - 1]
        if kind is not None and rec.kind != kind:
            raise ConfigurationError(f"layer {i} of {self.name} is a {rec.kind} layer, not {kind}")
        return rec

    # ------------------------------------------------------------ weights ↔ coordinates
    def weights_from(self, Wbars: Sequence, frames: "CNNFrames | None" = None) -> Point:
        """The Point of the weight space whose coordinates in ``frames`` are ``Wbars``.

        ``Wbars[i - 1] = [W_i b_i]`` for layer ``i``: ``(I, |Δ|·J + 1)`` for a conv layer
        (offset-major patch order), ``(e, d + 1)`` for a dense layer (flattened input
        location-major).
        """
        F = self._frames(frames)
        if len(Wbars) != self.L:
            raise DimensionError(f"{self.name} has {self.L} parametrized layers, got {len(Wbars)} weight matrices")
        parts = []
        for i, M in enumerate(Wbars, start=1):
            shape = self.weight_spaces.layer(i).shape
            if tuple(M.shape) != shape:
                raise DimensionError(f"layer {i}: W̄_{i} must be {shape}, got {tuple(M.shape)}")
            parts.append(field_of(M).vec(M) if isinstance(M, sp.MatrixBase) else np.asarray(M, float).reshape(-1, order="F"))
        field = field_of(*parts)
        return Point(F.weight_space_frame, field.concat([field.asvector(p) for p in parts]))

    def layer_points(self, weights: Point, frames: "CNNFrames | None" = None) -> LayerList:
        """``[ω_1, …, ω_L]``: the layers' weights as Points of ``W_i`` in the frames' induced
        frames (position ``i - 1`` holds layer ``i``; ``.layer(i)`` reads it)."""
        F = self._frames(frames)
        if not isinstance(weights, Point) or weights.space is not self.weight_space:
            raise SpaceMismatchError(f"weights must be a Point of {self.weight_space.name}, got {weights!r}")
        parts = self.weight_space.split(weights.coords(F.weight_space_frame))
        return LayerList(Point(F.weight_frame(i), p) for i, p in enumerate(parts, start=1))

    def layer_weights(self, weights: Point, frames: "CNNFrames | None" = None) -> LayerList:
        """``[W̄_1, …, W̄_L]`` in ``frames`` (the law F.4 / D.2 through the core; position
        ``i - 1`` holds layer ``i``, ``.layer(i)`` reads it).

        >>> net = AbstractCNN((1, 2, 2), [{"type": "conv", "out": 1, "k": 2}, {"type": "flatten"},
        ...                               {"type": "dense", "out": 1}], name="lw")
        >>> Ws = net.layer_weights(net.weights_from([np.array([[1., 2., 3., 4., 5.]]), np.array([[6., 7.]])]))
        >>> Ws.layer(1).tolist(), Ws.layer(2).tolist()
        ([[1.0, 2.0, 3.0, 4.0, 5.0]], [[6.0, 7.0]])
        """
        out = LayerList()
        for i, p in enumerate(self.layer_points(weights, frames), start=1):
            x = p.coords()
            out.append(field_of(x).unvec(x, self.weight_spaces.layer(i).shape))
        return out

    def random_weights(self, rng, scale: float = 1.0, frames: "CNNFrames | None" = None) -> Point:
        """Weights with i.i.d. ``N(0, scale²/fan_in)`` coordinates in ``frames``."""
        rng = np.random.default_rng(rng)
        Ws = [rng.normal(size=Wl.shape) * scale / np.sqrt(Wl.shape[1]) for Wl in self.weight_spaces]
        return self.weights_from(Ws, frames)

    def input_coords(self, X, frames: "CNNFrames | None" = None) -> np.ndarray:
        """Images ``(N, C, H, W)`` (reference frame of ``A[0]``) as ``(N, |T|, C)`` coordinates
        in ``frames.A[0]`` (the same change at every location)."""
        F = self._frames(frames)
        X = np.asarray(X, dtype=float)
        if X.ndim != 4 or X.shape[1:] != self.in_shape:
            raise DataError(f"{self.name} takes images of shape (N, {', '.join(map(str, self.in_shape))}), got {X.shape}")
        C = self.in_shape[0]
        x = X.reshape(X.shape[0], C, -1).transpose(0, 2, 1)
        ch = self.A[0].reference_frame.change_to(F.A[0])
        if ch.is_identity:
            return x.copy()
        return x @ np.asarray(ch.B, float).T + np.asarray(ch.c, float)

    def coordinates(self, weights: Point, frames: "CNNFrames | None" = None, padding: str = "point") -> "CoordinateCNN":
        """The coordinate network in ``frames`` (weights by F.4, activations by D.3, padding γ).

        ``padding="zeros"`` pads with the coordinates 0 instead of the padding point's (the
        negative control of Thm 4.1: a different network wherever κ moves the padding point).
        """
        F = self._frames(frames)
        if padding not in ("point", "zeros"):
            raise ConfigurationError(f"padding must be 'point' or 'zeros', got {padding!r}")
        Ws = LayerList(np.asarray(W, dtype=float) for W in self.layer_weights(weights, F))
        ops = []
        for n, rec in enumerate(self.layers):
            if rec.kind == "conv":
                pad = (self.padding_point(rec.a_in).coords(F.A[rec.a_in]) if padding == "point"
                       else np.zeros(self.A[rec.a_in].dim))
                ops.append(("conv", rec.geom, Ws.layer(rec.layer), np.asarray(pad, float), F.activation(rec.layer)))
            elif rec.kind == "dense":
                ops.append(("dense", Ws.layer(rec.layer), F.activation(rec.layer)))
            else:
                ops.append((rec.kind, rec.geom))
        return CoordinateCNN(ops)

    def forward(self, weights: Point, X, frames: "CNNFrames | None" = None, padding: str = "point"):
        """Outputs in ``frames`` (flattened location-major if the network ends on a grid)."""
        F = self._frames(frames)
        return self.coordinates(weights, F, padding).forward(self.input_coords(X, F))

    # ------------------------------------------------------------ maps in frames
    def maps(self, weights: Point, frames: "CNNFrames | None" = None, padding: str = "point") -> list:
        """The network read in ``frames`` as core maps: a list of ``(kind, Map, layer)``
        (``layer`` the weight layer's number ``i = 1..L``, ``None`` for pooling).

        ``kind`` is ``patches`` (a conv layer's per-location patch maps, a list, not part of
        the chain), ``weights`` (for a conv: ``(I_|T| ⊗ W) ∘`` patch map, ``A^|T_in| → Z^|T|``;
        for a dense layer the affine map ``ω``), ``act`` (the activation at every location),
        ``avgpool`` (affine) or ``maxpool`` (coordinatewise max in these frames, smooth
        almost everywhere).  Every map is built from coordinates in ``frames``.
        """
        F = self._frames(frames)
        omegas = self.layer_points(weights, F)
        out = []
        for n, rec in enumerate(self.layers):
            if rec.kind == "conv":
                l, g = rec.layer, rec.geom
                fA, fZ, fP = F.A[rec.a_in], F.Z.layer(l), F.patch_frame(l)
                out.append(("patches", self.location_patch_maps(l, fA, padding), l))
                S, pb = self._patch_parts(l, fA, padding)
                om = self.weight_spaces.layer(l).map_of(omegas.layer(l))
                Wl, bl = om.linear(fP, fZ), om.offset(fP, fZ)
                field = field_of(Wl, bl, pb)
                Wt = field.kron(field.eye(g.T), field.asmatrix(Wl))
                bt = field.concat([field.asvector(bl)] * g.T)
                # the conv layer on the grid: (I_T ⊗ W) ∘ patch map, i.e. Z = W A^exp + b 1ᵀ
                Wg = field.matmul(Wt, field.asmatrix(S))
                bg = field.matmul(Wt, field.asvector(pb)) + bt
                out.append(("weights", AffineMap(power_frame(fA, g.T_in), power_frame(fZ, g.T), Wg, bg), l))
                out.append(("act", _grid_activation(power_frame(fZ, g.T), power_frame(F.A[rec.a_out], g.T),
                                                    F.activation(l), g.T), l))
            elif rec.kind == "dense":
                l = rec.layer
                fD, fZ = F.layer_input_frame(l), F.Z.layer(l)
                om = self.weight_spaces.layer(l).map_of(omegas.layer(l))
                out.append(("weights", AffineMap(fD, fZ, om.linear(fD, fZ), om.offset(fD, fZ)), l))
                out.append(("act", activation_map(fZ, F.A[rec.a_out], F.activation(l)), l))
            elif rec.kind == "avgpool":
                out.append(("avgpool", self.pool_map(n, F.A[rec.a_in]), None))
            elif rec.kind == "maxpool":
                out.append(("maxpool", _max_pool_map(power_frame(F.A[rec.a_in], rec.geom.T_in),
                                                     power_frame(F.A[rec.a_in], rec.geom.T), rec.geom), None))
        return out

    def input_points(self, Xc, frames: "CNNFrames | None" = None) -> list:
        """Points of ``A[0]^|T|`` from coordinates ``(N, |T|, C)`` given in ``frames.A[0]``."""
        F = self._frames(frames)
        f0 = power_frame(F.A[0], self.in_shape[1] * self.in_shape[2])
        if isinstance(Xc, (list, tuple)):  # symbolic: one sympy column per example
            return [Point(f0, x) for x in Xc]
        Xc = np.asarray(Xc, dtype=float)
        return [Point(f0, x.reshape(-1)) for x in Xc]

    # ------------------------------------------------------------ display
    def _display(self, frame=None, weights=None):
        return _display.cnn_display(self, frame, weights)

    def display(self, frame=None, weights=None):
        """The network in the CNNFrames ``frame`` (default: reference frames): spaces and
        grids, frames, ``|T_l|``, activations in those frames (D.3) and, given ``weights``,
        ``[W̄_l]`` (F.4) -- :func:`geomkfac.display.cnn_display`."""
        return self._display(frame, weights)

    def latex(self, frame=None, weights=None) -> str:
        """The LaTeX of :meth:`display`."""
        return self._display(frame, weights).latex

    def __repr__(self) -> str:
        kinds = " → ".join(r.kind for r in self.layers)
        return f"AbstractCNN({self.name!r}, in={self.in_shape}, {kinds})"


def _avg_matrix(geom: PoolGeometry, J: int, symbolic: bool):
    T, Tin, s2 = geom.T, geom.T_in, geom.s * geom.s
    P = np.zeros((T, Tin), dtype=int)
    for t in range(T):
        P[t, geom.windows[t]] = 1
    if symbolic:
        return sp.ImmutableMatrix(sp.kronecker_product(sp.Matrix(P), sp.eye(J)) * sp.Rational(1, s2))
    return np.kron(P / s2, np.eye(J))


def _grid_activation(frame_Z: Frame, frame_A: Frame, act: Activation, T: int) -> SmoothMap:
    """The activation applied at every one of ``T`` locations: ``Z^T → A^T`` (block diagonal)."""
    n = frame_Z.space.dim // T

    def f(x):
        field = field_of(x)
        if field.symbolic:
            return field.concat([act(p) for p in field.split(field.asvector(x), [n] * T)])
        return act(np.asarray(x, float).reshape(T, n)).reshape(-1)

    def jac(x):
        field = field_of(x)
        if field.symbolic:
            return field.block_diag([act.jacobian(p) for p in field.split(field.asvector(x), [n] * T)])
        Js = act.jacobian(np.asarray(x, float).reshape(T, n))  # (T, n, n)
        out = np.zeros((T * n, T * n))
        for t in range(T):
            out[t * n:(t + 1) * n, t * n:(t + 1) * n] = Js[t]
        return out

    return SmoothMap(frame_Z, frame_A, f, jac)


def _max_pool_map(frame_in: Frame, frame_out: Frame, geom: PoolGeometry) -> SmoothMap:
    """Coordinatewise max over each window, in the given frames (numeric)."""
    J = frame_in.space.dim // geom.T_in

    def arg(x):
        a = np.asarray(x, float).reshape(geom.T_in, J)[geom.windows]  # (T, s², J)
        return a, np.argmax(a, axis=1)

    def f(x):
        a, i = arg(x)
        return np.take_along_axis(a, i[:, None, :], axis=1)[:, 0, :].reshape(-1)

    def jac(x):
        _, i = arg(x)
        out = np.zeros((geom.T * J, geom.T_in * J))
        for t in range(geom.T):
            for j in range(J):
                out[t * J + j, geom.windows[t, i[t, j]] * J + j] = 1.0
        return out

    return SmoothMap(frame_in, frame_out, f, jac)


# =========================================================================== frames
class CNNFrames(_display.Displayable):
    """A frame on every local activation space ``A_s`` (``s = 0..L``) and pre-activation
    space ``Z_i`` (``i = 1..L``).

    The same frame of a local space is used at every location (power frames), in every
    patch (the patch frame ``power_frame(A, |Δ|)``) and for the flattened input of a dense
    layer (``power_frame(A, |T|)``: ``I_|T| ⊗ Ω``, ``γ`` at every location).

    Attributes
    ----------
    A : tuple of Frame
        ``A[s]`` the frame of ``A_s``, ``s = 0..L``.
    Z : LayerTuple of Frame
        Position ``i - 1`` holds the frame of ``Z_i``; ``Z.layer(i)`` reads it.
    """

    def __init__(self, net: AbstractCNN, A_frames: Sequence[Frame], Z_frames: Sequence[Frame]):
        A_frames, Z_frames = tuple(A_frames), tuple(Z_frames)
        if len(A_frames) != len(net.A) or len(Z_frames) != len(net.Z):
            raise DimensionError(f"{net.name} needs {len(net.A)} A-frames and {len(net.Z)} Z-frames, "
                                 f"got {len(A_frames)} and {len(Z_frames)}")
        for f, sp_ in zip(A_frames + Z_frames, list(net.A) + list(net.Z)):
            if not isinstance(f, Frame) or f.space is not sp_:
                raise SpaceMismatchError(f"the frame given for {sp_.name} must be a frame of {sp_.name}, got {f!r}")
        self.net, self.A, self.Z = net, A_frames, LayerTuple(Z_frames)

    def derive(self, A: dict | None = None, Z: dict | None = None, name: str = "‡") -> "CNNFrames":
        """New frames: ``a‡ = Ω a + γ`` on ``A_s`` for ``A={s: (Ω, γ)}`` (``s = 0..L``), and
        ``z = Φ z‡ + τ`` on ``Z_i`` for ``Z={i: (Φ, τ)}`` (``i = 1..L``; the directions of
        Appendix D).  Layer ``i`` maps ``Z_i`` to ``A_i``: ``A={i: …}, Z={i: …}`` change both
        ends of its activation.

        >>> import numpy as np
        >>> net = AbstractCNN((1, 2, 2), [{"type": "conv", "out": 1, "k": 2}, {"type": "flatten"},
        ...                               {"type": "dense", "out": 1}], name="dv")
        >>> kappa = net.reference_frames().derive(A={1: ([[2.]], [1.])}, Z={1: ([[3.]], None)})
        >>> kappa.A[1].name, kappa.Z.layer(1).name
        ('ι_dv.A1‡', 'ι_dv.Z1‡')
        >>> net.reference_frames().derive(Z={0: ([[3.]], None)})
        Traceback (most recent call last):
        ...
        geomkfac.errors.ConfigurationError: the pre-activation spaces Z_i of dv are numbered 1..2, got 0
        """
        A, Z = dict(A or {}), dict(Z or {})
        L = self.net.L
        newA = list(self.A)
        for s, (Om, g) in A.items():
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= L:
                raise ConfigurationError(f"the activation spaces A_s of {self.net.name} are numbered 0..{L} "
                                         f"(0: the input), got {s!r}")
            newA[s] = self.A[s].derive(Om, g, name=f"{self.A[s].name}{name}")
        newZ = list(self.Z)
        for i, (Phi, tau) in Z.items():
            i = check_layer(i, L, f"the pre-activation spaces Z_i of {self.net.name}")
            field = field_of(Phi, tau)
            Pinv = field.inv(field.asmatrix(Phi))
            t = field.zeros(self.net.Z.layer(i).dim) if tau is None else field.asvector(tau)
            newZ[i - 1] = self.Z.layer(i).derive(Pinv, -field.matmul(Pinv, t), name=f"{self.Z.layer(i).name}{name}")
        return CNNFrames(self.net, newA, newZ)

    def patch_frame(self, i: int) -> Frame:
        """The frame of conv layer ``i``'s patch space ``P_i = A^|Δ|`` (a power frame)."""
        rec = self.net._param_layer(i, "conv")
        return power_frame(self.A[rec.a_in], rec.geom.K)

    def layer_input_frame(self, i: int) -> Frame:
        """Frame of the input space of ``W_i``: the patch frame, or the flattened input's."""
        rec = self.net._param_layer(i)
        if rec.kind == "conv":
            return self.patch_frame(i)
        D = self.net.layer_inputs.layer(i)
        return power_frame(self.A[rec.a_in], len(D.factors)) if isinstance(D, ProductSpace) else self.A[rec.a_in]

    def weight_frame(self, i: int) -> Frame:
        """The frame of ``W_i`` (``i = 1..L``) induced by the layer's input frame and ``Z_i``'s."""
        return self.net.weight_spaces.layer(i).frame(self.layer_input_frame(i), self.Z.layer(i))

    @property
    def weight_space_frame(self) -> Frame:
        """The product frame on ``W_1 × … × W_L``."""
        return self.net.weight_space.frame_from([self.weight_frame(i) for i in range(1, self.net.L + 1)])

    @property
    def output_frame(self) -> Frame:
        net = self.net
        if net.out_grid is None:
            return self.A[net.out_index]
        return power_frame(self.A[net.out_index], _grid_T(net.out_grid))

    def activation(self, i: int) -> Activation:
        """``φ_i : Z_i → A_i`` (``i = 1..L``) in these frames (Eqn. D.3), the same at every location."""
        rec = self.net._param_layer(i)
        fA, fZ = self.A[rec.a_out], self.Z.layer(i)
        if fA.is_reference and fZ.is_reference:
            return rec.activation
        chA = self.net.A[rec.a_out].reference_frame.change_to(fA)
        chZ = fZ.change_to(self.net.Z.layer(i).reference_frame)
        return ConjugatedActivation(rec.activation, chA.B, chA.c, chZ.B, chZ.c)

    def _display(self, frame=None):
        """The network in these frames (``frame``: other CNNFrames to show instead)."""
        return _display.cnn_display(self.net, frame if frame is not None else self)

    def __repr__(self) -> str:
        return f"CNNFrames(A: [{', '.join(f.name for f in self.A)}]; Z: [{', '.join(f.name for f in self.Z)}])"


# =========================================================================== coordinates
class CoordinateCNN:
    """A convolutional network in coordinates, vectorized over examples and locations.

    ``ops``: ``("conv", ConvGeometry, W̄, pad, act)`` with ``W̄`` offset-major and ``pad`` the
    padding coordinates; ``("avgpool" | "maxpool", PoolGeometry)``; ``("flatten", None)``;
    ``("dense", W̄, act)``.  :meth:`forward` takes ``(N, |T|, C)`` input coordinates.
    The conv layer is the im2col product of Eqn. F.2: ``Z = W A^exp + b 1ᵀ``.
    """

    def __init__(self, ops):
        self.ops = list(ops)

    @staticmethod
    def expand(a, geom: ConvGeometry, pad) -> np.ndarray:
        """``A^exp``: the patches ``(N, |T|, |Δ|·J)`` (offset-major) of ``a`` ``(N, |T_in|, J)``."""
        N, Tin, J = a.shape
        if Tin != geom.T_in:
            raise DimensionError(f"a {geom} needs {geom.T_in} input locations, got {Tin}")
        padded = np.concatenate([a, np.broadcast_to(np.asarray(pad, float), (N, 1, J))], axis=1)
        idx = np.where(geom.source >= 0, geom.source, Tin)  # padding → the appended location
        return padded[:, idx, :].reshape(N, geom.T, geom.K * J)

    def forward(self, x, keep: bool = False):
        """Outputs ``(N, D)``; with ``keep``, also ``[(ā, z)]`` per parametrized layer
        (``ā`` ``(N, |T|, d+1)``, ``z`` ``(N, |T|, I)``; a :class:`~geomkfac.numbering.LayerList`,
        position ``i - 1`` holds layer ``i``)."""
        a = np.asarray(x, dtype=float)
        kept = LayerList()
        for op in self.ops:
            kind = op[0]
            if kind == "conv":
                _, geom, Wb, pad, act = op
                P = self.expand(a, geom, pad)
                z = P @ Wb[:, :-1].T + Wb[:, -1]
                if keep:
                    kept.append((np.concatenate([P, np.ones(P.shape[:2] + (1,))], axis=2), z))
                N, T, I = z.shape
                a = act(z.reshape(N * T, I)).reshape(N, T, I)
            elif kind == "avgpool":
                a = a[:, op[1].windows, :].mean(axis=2)
            elif kind == "maxpool":
                a = a[:, op[1].windows, :].max(axis=2)
            elif kind == "flatten":
                a = a.reshape(a.shape[0], -1)
            elif kind == "dense":
                _, Wb, act = op
                z = a @ Wb[:, :-1].T + Wb[:, -1]
                if keep:
                    kept.append((np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)[:, None, :], z[:, None, :]))
                a = act(z)
        out = a.reshape(a.shape[0], -1)
        return (out, kept) if keep else out


# =========================================================================== oracle convention
def patch_permutation(J: int, K: int) -> np.ndarray:
    """``perm`` with ``patch_channel_major = patch_offset_major[perm]``: channel-major index
    ``j·K + δ`` reads offset-major index ``δ·J + j``.

    >>> patch_permutation(2, 3).tolist()
    [0, 2, 4, 1, 3, 5]
    """
    return np.array([d * J + j for j in range(J) for d in range(K)], dtype=np.int64)


def flatten_permutation(C: int, T: int) -> np.ndarray:
    """``perm`` with ``flat_channel_major = flat_location_major[perm]`` (index ``c·T + t``
    reads ``t·C + c``)."""
    return patch_permutation(C, T)


def layer_input_permutation(net: AbstractCNN, i: int) -> np.ndarray:
    """The permutation of ``ā`` (homogeneous 1 last, fixed) from this module's order to the
    reference files' order for parametrized layer ``i = 1..L``."""
    rec = net._param_layer(i)
    J = net.A[rec.a_in].dim
    if rec.kind == "conv":
        p = patch_permutation(J, rec.geom.K)
    else:
        D = net.layer_inputs.layer(i)
        p = flatten_permutation(J, len(D.factors)) if isinstance(D, ProductSpace) else np.arange(J)
    return np.concatenate([p, [p.size]])


def to_oracle_weights(net: AbstractCNN, Wbars) -> LayerList:
    """``[(W, b)]`` in the reference files' shapes: ``(I, J, k, k)`` for conv layers,
    ``(e, d)`` (channel-major flatten) for dense layers (position ``i - 1`` holds layer ``i``,
    as in ``Wbars``; ``.layer(i)`` reads it)."""
    out = LayerList()
    for i, Wb in enumerate(Wbars, start=1):
        Wb = np.asarray(Wb, float)
        p = layer_input_permutation(net, i)
        W = Wb[:, p[:-1]]
        rec = net._param_layer(i)
        if rec.kind == "conv":
            J = net.A[rec.a_in].dim
            W = W.reshape(W.shape[0], J, rec.geom.k, rec.geom.k)
        out.append((W, Wb[:, -1].copy()))
    return out


def from_oracle_weights(net: AbstractCNN, Ws, bs) -> LayerList:
    """Inverse of :func:`to_oracle_weights`: ``[W̄_1, …, W̄_L]`` in this module's order
    (position ``i - 1`` holds layer ``i``; ``.layer(i)`` reads it)."""
    out = LayerList()
    for i, (W, b) in enumerate(zip(Ws, bs), start=1):
        W = np.asarray(W, float).reshape(np.shape(W)[0], -1)
        p = layer_input_permutation(net, i)[:-1]
        Wm = np.empty_like(W)
        Wm[:, p] = W
        out.append(np.hstack([Wm, np.asarray(b, float).reshape(-1, 1)]))
    return out


def oracle_theta(net: AbstractCNN, Wbars) -> np.ndarray:
    """``θ = [vec W̄_1; …; vec W̄_L]`` in the reference files' order (column-stacking of
    ``[W.reshape(I, -1) b]``)."""
    return np.concatenate([np.hstack([W.reshape(W.shape[0], -1), b[:, None]]).reshape(-1, order="F")
                           for W, b in to_oracle_weights(net, Wbars)])
