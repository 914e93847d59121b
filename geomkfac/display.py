"""Display any object of geomkfac in any frame, as text and LaTeX, and show the
transformation laws with the matrices substituted.

Every value and map of the core (points, vectors, covectors, metrics, second moments,
Kronecker and additive metrics, affine maps, frames, changes of frame, affine spaces,
abstract networks and their frame choices) has

* ``obj.display(frame)`` -- a :class:`Display` (text by ``str``, LaTeX by ``.latex``, and
  rendered by Jupyter) of the object in ``frame`` (default: the frame it was made in);
* ``obj.latex(frame)`` -- the LaTeX string (math mode, without ``$``);
* ``obj._repr_latex_()`` -- ``$…$`` in its own frame (Jupyter);
* ``sympy.latex(obj)`` and ``sympy.pretty(obj)`` -- the same, through sympy's printers.

:func:`derivation` shows a transformation law step by step, e.g. for a metric
``G_κ = B⁻ᵀ G_ι B⁻¹`` with ``G_ι``, ``(B, c)``, ``B⁻¹`` and the result.

Typesetting rules (decided here, used everywhere)
-------------------------------------------------
Names (:func:`latex_name`):

* Greek letters become commands (``ι`` → ``\\iota``, ``κ2`` → ``\\kappa_{2}``); no raw
  Unicode Greek is ever emitted;
* trailing digits become a subscript (``A0`` → ``A_{0}``), an explicit ``_`` starts a
  subscript written upright as text (``ι_A`` → ``\\iota_{\\mathrm{A}}``);
* inside a subscript (``G_{…}``, :func:`latex_sub`) a name's own subscript is written in
  parentheses and trailing digits inline (``G_{\\iota\\left(\\mathrm{A}\\right)}``,
  ``G_{{\\kappa}2}``), so subscripts are never nested;
* a dotted prefix becomes an upright superscript (``net.A0`` → ``A_{0}^{\\mathrm{net}}``),
  a trailing ``‡`` the superscript ``\\ddagger``;
* words of several letters are upright (``\\mathrm{Vector}``); products ``A × B``,
  powers ``A^2``, ``Aff(A, Z)`` and tuples ``(κ_A, κ_Z)`` are typeset part by part.

Numbers (:func:`latex_entry`, :func:`text_entry`):

* an integer-valued float (NumPy or sympy ``Float``) is shown as the integer (``1``,
  not ``1.0``); ``-0.0`` is ``0``;
* other floats with 6 significant digits (``%.6g``), exponents as ``\\cdot 10^{k}``;
* symbolic entries are shown in their display form
  (:func:`geomkfac.fields.simplify_for_display`: ``cancel`` for rational functions,
  ``trigsimp`` when trigonometric functions appear); the stored values are unchanged.

Examples
--------
>>> import numpy as np
>>> from geomkfac.spaces import AffineSpace
>>> from geomkfac.metrics import Metric
>>> A = AffineSpace(2, "A")
>>> kappa = A.reference_frame.derive(np.array([[1., 1.], [0., 1.]]), name="κ")
>>> g = Metric(A.reference_frame, np.array([[2., 0.], [0., 1.]]))
>>> print(g.display(kappa))
G in κ (metric on A):
[ 2  -2]
[-2   3]
>>> g.latex(kappa)
'G_{\\\\kappa} = \\\\begin{pmatrix} 2 & -2 \\\\\\\\ -2 & 3 \\\\end{pmatrix}'
>>> latex_name("net.A0"), latex_name("ι_A"), latex_name("κ2‡")
('A_{0}^{\\\\mathrm{net}}', '\\\\iota_{\\\\mathrm{A}}', '\\\\kappa_{2}^{\\\\ddagger}')
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import sympy

from geomkfac.errors import SpaceMismatchError
from geomkfac.fields import simplify_for_display

__all__ = [
    "Display",
    "Displayable",
    "latex_name",
    "latex_sub",
    "latex_entry",
    "text_entry",
    "latex_matrix",
    "text_matrix",
    "derivation",
    "GREEK",
]

#: Unicode Greek letters and their LaTeX commands
GREEK = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\varepsilon",
    "ζ": r"\zeta", "η": r"\eta", "θ": r"\theta", "ι": r"\iota", "κ": r"\kappa",
    "λ": r"\lambda", "μ": r"\mu", "ν": r"\nu", "ξ": r"\xi", "π": r"\pi", "ρ": r"\rho",
    "σ": r"\sigma", "τ": r"\tau", "υ": r"\upsilon", "φ": r"\varphi", "ϕ": r"\phi",
    "χ": r"\chi", "ψ": r"\psi", "ω": r"\omega",
    "Γ": r"\Gamma", "Δ": r"\Delta", "Θ": r"\Theta", "Λ": r"\Lambda", "Ξ": r"\Xi",
    "Π": r"\Pi", "Σ": r"\Sigma", "Φ": r"\Phi", "Ψ": r"\Psi", "Ω": r"\Omega",
}
_OTHER = {"‡": r"\ddagger", "†": r"\dagger", "×": r"\times", "⊗": r"\otimes", "′": "'"}


def _commands(text: str) -> str:
    """Replace every Unicode Greek letter (and ‡ † × ⊗) by its command, in braces."""
    return "".join("{" + GREEK[ch] + "}" if ch in GREEK else ("{" + _OTHER[ch] + "}" if ch in _OTHER else ch) for ch in text)


def _escape(text: str) -> str:
    return re.sub(r"([_&%#$])", r"\\\1", text)


def _upright(text: str) -> str:
    """Text set upright inside math: ``\\mathrm{…}``, Greek as commands, ``_`` escaped."""
    return r"\mathrm{" + _commands(_escape(text)) + "}"


def _split_top(text: str, sep: str) -> list:
    """Split at ``sep`` outside parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _base(base: str) -> str:
    if len(base) == 1:
        if base in GREEK:
            return GREEK[base]
        if base.isascii() and base.isalpha():
            return base
    return _upright(base)


def latex_name(name, sub: bool = False) -> str:
    """The LaTeX of a name (space, frame, network); rules in the module docstring.

    >>> latex_name("κ"), latex_name("A0"), latex_name("ι_tiny.W"), latex_name("A × B")
    ('\\\\kappa', 'A_{0}', '\\\\iota_{\\\\mathrm{tiny.W}}', 'A \\\\times B')
    >>> latex_name("Aff(net.A0, net.Z1)")
    '\\\\mathrm{Aff}\\\\left(A_{0}^{\\\\mathrm{net}}, Z_{1}^{\\\\mathrm{net}}\\\\right)'
    """
    ln = (lambda x: latex_name(x, sub))
    name = str(name).strip()
    if not name:
        return r"\varnothing"
    parts = _split_top(name, " × ")
    if len(parts) > 1:
        return r" \times ".join(ln(p) for p in parts)
    if name.startswith("(") and name.endswith(")") and len(_split_top(name[1:-1], ", ")) >= 1 and _balanced(name[1:-1]):
        return r"\left(" + ", ".join(ln(p) for p in _split_top(name[1:-1], ", ")) + r"\right)"
    m = re.fullmatch(r"([A-Za-z]+)\((.*)\)(\*?)", name)
    if m and _balanced(m.group(2)):
        head = r"\mathrm{" + m.group(1) + "}"
        inner = ", ".join(ln(p) for p in _split_top(m.group(2), ", "))
        return head + r"\left(" + inner + r"\right)" + ("^{*}" if m.group(3) else "")
    sup = []
    stripped = name.rstrip("‡")
    daggers = len(name) - len(stripped)
    name = stripped
    m = re.fullmatch(r"(.+)\^(\d+)", name)
    if m:
        inner = ln(m.group(1))
        return r"\left(" + inner + r"\right)^{" + m.group(2) + "}" if ("_" in inner or "^" in inner) else inner + "^{" + m.group(2) + "}"
    if "_" in name:
        base, rest = name.split("_", 1)
        if sub:  # inside a subscript: the name's own subscript in parentheses, never nested
            out = _base(base) + r"\left(" + _upright(rest) + r"\right)"
        else:
            out = _base(base) + "_{" + (rest if rest.isdigit() else _upright(rest)) + "}"
    else:
        if "." in name:
            prefix, name = name.rsplit(".", 1)
            sup.append(_upright(prefix))
        m = re.fullmatch(r"(\D+?)(\d+)", name)
        if m:
            out = "{" + _base(m.group(1)) + "}" + m.group(2) if sub else _base(m.group(1)) + "_{" + m.group(2) + "}"
        else:
            out = _base(name)
    sup += [r"\ddagger"] * daggers
    if sup:
        out += "^{" + ",".join(sup) + "}"
    return out


def latex_sub(name) -> str:
    r"""The LaTeX of a name used inside a subscript (``G_{…}``): as :func:`latex_name`, but
    its own subscript is written in parentheses and trailing digits inline, so that
    subscripts are never nested.

    >>> latex_sub("κ"), latex_sub("ι_A"), latex_sub("κ2"), latex_sub("net.A0")
    ('\\kappa', '\\iota\\left(\\mathrm{A}\\right)', '{\\kappa}2', '{A}0^{\\mathrm{net}}')
    """
    return latex_name(name, sub=True)


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


# --------------------------------------------------------------------------- entries


def _float_text(x: float, latex: bool) -> str:
    if not np.isfinite(x):
        return (r"\infty" if x > 0 else r"-\infty") if latex and np.isinf(x) else ("nan" if np.isnan(x) else str(x))
    if float(x).is_integer():
        return str(int(x))
    s = f"{x:.6g}"
    if latex and "e" in s:
        mant, exp = s.split("e")
        return mant + r" \cdot 10^{" + str(int(exp)) + "}"
    return s


def _integerize(e):
    """sympy expression with integer-valued Floats replaced by Integers."""
    if isinstance(e, sympy.Float):
        return sympy.Integer(int(e)) if e == int(e) else e
    if isinstance(e, sympy.Basic):
        floats = [f for f in e.atoms(sympy.Float) if f == int(f)]
        if floats:
            return e.xreplace({f: sympy.Integer(int(f)) for f in floats})
    return e


def latex_entry(x) -> str:
    """The LaTeX of one matrix entry (number rules in the module docstring).

    >>> latex_entry(1.0), latex_entry(-0.0), latex_entry(0.25), latex_entry(1e-7), latex_entry(sympy.Float(3))
    ('1', '0', '0.25', '1 \\\\cdot 10^{-7}', '3')
    """
    if isinstance(x, (bool, np.bool_)):
        return str(int(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return _float_text(float(x), True)
    e = _integerize(simplify_for_display(sympy.sympify(x)))
    if isinstance(e, sympy.Float):
        return _float_text(float(e), True)
    return _commands(sympy.latex(e))


def text_entry(x) -> str:
    """The plain-text form of one matrix entry (same number rules as :func:`latex_entry`).

    >>> text_entry(2.0), text_entry(np.float64(0.5)), text_entry(sympy.Rational(1, 3))
    ('2', '0.5', '1/3')
    """
    if isinstance(x, (bool, np.bool_)):
        return str(int(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return _float_text(float(x), False)
    e = _integerize(simplify_for_display(sympy.sympify(x)))
    if isinstance(e, sympy.Float):
        return _float_text(float(e), False)
    return sympy.sstr(e)


def _rows(M) -> list:
    if isinstance(M, sympy.MatrixBase):
        return [[M[i, j] for j in range(M.cols)] for i in range(M.rows)]
    a = np.asarray(M)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    return [list(r) for r in a]


def latex_matrix(M) -> str:
    """A matrix (or a coordinate vector, as a column) as ``\\begin{pmatrix}…\\end{pmatrix}``.

    >>> latex_matrix(np.array([[1., 0.5], [0., 2.]]))
    '\\\\begin{pmatrix} 1 & 0.5 \\\\\\\\ 0 & 2 \\\\end{pmatrix}'
    """
    rows = _rows(M)
    if not rows or not rows[0]:
        return r"\begin{pmatrix}\end{pmatrix}"
    return r"\begin{pmatrix} " + r" \\ ".join(" & ".join(latex_entry(x) for x in r) for r in rows) + r" \end{pmatrix}"


def text_matrix(M) -> list:
    """A matrix as lines of text, columns right-aligned, one bracketed row per line.

    >>> print("\\n".join(text_matrix(np.array([[1., -0.5], [10., 2.]]))))
    [ 1  -0.5]
    [10     2]
    """
    rows = [[text_entry(x) for x in r] for r in _rows(M)]
    if not rows or not rows[0]:
        return ["[]"]
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return ["[" + "  ".join(x.rjust(w) for x, w in zip(r, widths)) + "]" for r in rows]


# --------------------------------------------------------------------------- Display


class Display:
    """A displayed object: ``str`` gives the text, :attr:`latex` the LaTeX (math mode,
    no ``$``); Jupyter renders :meth:`_repr_latex_`.

    Parameters
    ----------
    text : str
    latex : str
    """

    def __init__(self, text: str, latex: str):
        self.text = text
        self.latex = latex

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_latex_(self) -> str:
        return "$" + self.latex + "$"

    def _latex(self, printer=None) -> str:
        return self.latex


def _lines_block(label: str, M) -> list:
    return [label] + text_matrix(M)


def _eq_text(lhs: str, M) -> str:
    """``lhs = matrix`` as text: a single line for one row, else the matrix under it."""
    lines = text_matrix(M)
    if len(lines) == 1:
        return f"{lhs} = {lines[0]}"
    return "\n".join([f"{lhs} ="] + lines)


class Displayable:
    """Mixin: ``display``, ``latex``, ``_repr_latex_``, sympy's ``_latex`` / ``_pretty``,
    and ``derivation``, all built from one method ``_display(frame) -> Display``."""

    __slots__ = ()

    def _display(self, frame=None) -> Display:  # pragma: no cover - every class overrides
        raise NotImplementedError

    def display(self, frame=None) -> Display:
        """The object in ``frame`` (default: its own) as text (``str``) and LaTeX (``.latex``)."""
        return self._display(frame)

    def latex(self, frame=None) -> str:
        """The LaTeX of the object in ``frame`` (math mode, without ``$``)."""
        return self._display(frame).latex

    def _repr_latex_(self) -> str | None:
        try:
            return "$" + self._display(None).latex + "$"
        except Exception:  # a display must never break a notebook cell
            return None

    def _latex(self, printer=None) -> str:
        return self._display(None).latex

    def _pretty(self, printer=None):
        from sympy.printing.pretty.stringpict import prettyForm

        return prettyForm(self._display(None).text)

    def derivation(self, frame) -> Display:
        """The transformation law into ``frame`` with the matrices substituted (:func:`derivation`)."""
        return derivation(self, frame)


# --------------------------------------------------------------------------- per-kind displays


def _frame_of(obj, frame):
    return obj.frame if frame is None else frame


def value_display(value, frame=None) -> Display:
    """Display of a Point / Vector / Covector in ``frame``."""
    F = _frame_of(value, frame)
    x = value.coords(F)
    sym = {"point": "p", "vector": "v", "covector": r"\omega"}[value._kind]
    tsym = {"point": "p", "vector": "v", "covector": "ω"}[value._kind]
    kind = type(value).__name__
    text = f"{kind} of {value.space.name} in {F.name}: " + "(" + ", ".join(text_entry(e) for e in _flat(x)) + ")"
    latex = r"\left[" + sym + r"\right]_{" + latex_sub(F.name) + "} = " + latex_matrix(x)
    del tsym
    return Display(text, latex)


def _flat(x) -> list:
    if isinstance(x, sympy.MatrixBase):
        return list(x)
    return list(np.asarray(x).reshape(-1))


def tensor_display(t, frame=None) -> Display:
    """Display of a Metric / SecondMoment / Pullback (its matrix in ``frame``)."""
    F = _frame_of(t, frame)
    M = t.matrix(F)
    symbol = t._symbol
    head = f"{symbol} in {F.name} ({t._label} on {t.space.name}):"
    text = "\n".join([head] + text_matrix(M))
    latex = symbol + "_{" + latex_sub(F.name) + "} = " + latex_matrix(M)
    return Display(text, latex)


def additive_display(g, frame=None) -> Display:
    """Display of an AdditiveMetric: its blocks in a product frame, else its matrix."""
    F = _frame_of(g, frame)
    if F.factor_frames is None:
        return tensor_display(g, F)
    blocks = g.blocks(F)
    lines = [f"G in {F.name} (additive metric on {g.space.name}): block diagonal"]
    parts = []
    for k, (B, f) in enumerate(zip(blocks, F.factor_frames)):
        lines.append(f"block {k} (in {f.name}):")
        lines += text_matrix(B)
        parts.append(latex_matrix(B))
    latex = "G_{" + latex_sub(F.name) + r"} = \operatorname{diag}\left(" + ",\\; ".join(parts) + r"\right)"
    return Display("\n".join(lines), latex)


def kronecker_display(g, frame=None) -> Display:
    """Display of a KroneckerMetric in an induced frame: ``A ⊗ G`` (kept factored)."""
    F = _frame_of(g, frame)
    if F.space is not g.space or F.induced_by is None:
        raise SpaceMismatchError(
            f"a Kronecker metric is displayed in a frame of {g.space.name} induced by frames on its "
            "domain and codomain (AffineMaps.frame(frame_A, frame_Z))"
        )
    fA, fZ = F.induced_by
    A, G = g.factors(fA, fZ)
    lines = [f"A ⊗ G in {F.name} (Kronecker metric on {g.space.name}):", f"A in {fA.name}:"]
    lines += text_matrix(A) + [f"G in {fZ.name}:"] + text_matrix(G)
    latex = (
        "A_{" + latex_sub(fA.name) + r"} \otimes G_{" + latex_sub(fZ.name) + "} = "
        + latex_matrix(A) + r" \otimes " + latex_matrix(G)
    )
    return Display("\n".join(lines), latex)


def affine_map_display(f, domain_frame=None, codomain_frame=None) -> Display:
    """Display of an AffineMap: ``[W b]`` in (``domain_frame``, ``codomain_frame``)."""
    df = domain_frame or f.domain_frame
    cf = codomain_frame or f.codomain_frame
    M = f.matrix(df, cf)
    text = "\n".join([f"[W b] of {f.domain.name} → {f.codomain.name} in ({df.name}, {cf.name}):"] + text_matrix(M))
    latex = r"\left[\bar{W}\right]_{" + latex_sub(df.name) + "," + latex_sub(cf.name) + "} = " + latex_matrix(M)
    return Display(text, latex)


def change_display(ch) -> Display:
    """Display of a FrameChange: ``y = B x + c``."""
    src, tgt = latex_sub(ch.source.name), latex_sub(ch.target.name)
    text = "\n".join(
        [f"change {ch.source.name} → {ch.target.name}: y = B x + c", "B ="] + text_matrix(ch.B)
        + ["c = (" + ", ".join(text_entry(e) for e in _flat(ch.c)) + ")"]
    )
    latex = (
        r"x_{" + tgt + "} = B x_{" + src + r"} + c,\quad B = " + latex_matrix(ch.B) + r",\quad c = " + latex_matrix(ch.c)
    )
    return Display(text, latex)


def frame_display(fr, frame=None) -> Display:
    """Display of a Frame relative to ``frame`` (default: its space's reference frame):
    its origin and basis vectors in ``frame``'s coordinates and the change ``(B, c)``."""
    F = fr.space.reference_frame if frame is None else frame
    ch = F.change_to(fr)
    inv = ch.inverse()
    origin = inv.c  # coordinates in F of the origin of fr
    basis = inv.B  # columns: basis vectors of fr in F
    text = "\n".join(
        [f"frame {fr.name} of {fr.space.name} (dim {fr.space.dim}), seen from {F.name}:",
         "origin = (" + ", ".join(text_entry(e) for e in _flat(origin)) + ")",
         "basis (columns) ="] + text_matrix(basis)
        + [f"coordinates: x_{fr.name} = B x_{F.name} + c with B ="] + text_matrix(ch.B)
        + ["c = (" + ", ".join(text_entry(e) for e in _flat(ch.c)) + ")"]
    )
    n = latex_sub(fr.name)
    latex = (
        r"o_{" + n + "} = " + latex_matrix(origin) + r",\quad \left(e_{" + n + r",j}\right)_{j} = " + latex_matrix(basis)
        + r"\quad\text{in } " + latex_sub(F.name)
    )
    return Display(text, latex)


def space_display(A, frame=None) -> Display:
    """Display of an AffineSpace: its dimension and a frame (origin and basis in the
    reference frame)."""
    F = A.reference_frame if frame is None else frame
    if F.space is not A:
        raise SpaceMismatchError(f"{F!r} is not a frame of {A.name}")
    fd = frame_display(F, A.reference_frame)
    text = f"affine space {A.name}, dim {A.dim}, frame {F.name}\n" + fd.text
    latex = latex_name(A.name) + r"\ (\dim = " + str(A.dim) + r"):\quad " + fd.latex
    return Display(text, latex)


def _act_latex(act, frames, i) -> str:
    name = act.name
    base = getattr(act, "base", None)
    if base is not None:  # conjugated: Ω φ(Φ z + τ) + γ
        b = base.name
        return r"\Omega\, \mathrm{" + b + r"}(\Phi z + \tau) + \gamma"
    return r"\mathrm{" + name + "}"


def network_display(net, frames=None, weights=None) -> Display:
    """Display of an AbstractMLP in a FrameChoice: spaces, frames, activations in those
    frames (Eqn. D.3) and, given ``weights``, the matrices ``[W̄_i]`` (law D.2)."""
    fc = net.reference_frames() if frames is None else frames
    lines = [f"abstract MLP {net.name}: widths {list(net.widths)}, layers 1..{net.L}"]
    tex = [r"\mathrm{MLP}\ " + _upright(net.name) + r":\quad"]
    rows = []
    Ws = net.layer_weights(weights, fc) if weights is not None else None
    for i in range(1, net.L + 1):
        act = fc.activation(i)
        desc = act.name if not hasattr(act, "base") else f"Ω {act.base.name}(Φ z + τ) + γ"
        lines.append(
            f"layer {i}: {net.A[i - 1].name} [{fc.A[i - 1].name}] → {net.Z[i].name} [{fc.Z[i].name}]"
            f" → {net.A[i].name} [{fc.A[i].name}], φ_{i} = {desc}"
        )
        row = (
            latex_name(net.A[i - 1].name) + r"\,[" + latex_name(fc.A[i - 1].name) + r"] \xrightarrow{\omega_{" + str(i) + "}} "
            + latex_name(net.Z[i].name) + r"\,[" + latex_name(fc.Z[i].name) + r"] \xrightarrow{\varphi_{" + str(i) + "}} "
            + latex_name(net.A[i].name) + r"\,[" + latex_name(fc.A[i].name) + r"],\quad \varphi_{" + str(i) + "} = "
            + _act_latex(act, fc, i)
        )
        if Ws is not None:
            lines.append(f"  [W b]_{i} =")
            lines += ["  " + ln for ln in text_matrix(Ws[i - 1])]
            row += r",\quad \left[\bar{W}_{" + str(i) + r"}\right] = " + latex_matrix(Ws[i - 1])
        rows.append(row)
    latex = tex[0] + r"\begin{array}{l} " + r" \\ ".join(rows) + r" \end{array}"
    return Display("\n".join(lines), latex)


def _framed(space_name: str, frame_name: str) -> str:
    """``A [ι]``: a space and the frame it is read in (LaTeX)."""
    return latex_name(space_name) + r"\,[" + latex_name(frame_name) + "]"


def _grid_text(hw) -> str:
    return f"{hw[0]}×{hw[1]}"


def _grid_power(space_name: str, hw, frame_name: str | None = None) -> str:
    """``(A)^{H × W} [ι]``: a feature map, a point of the power of the local space ``A``."""
    out = r"\left(" + latex_name(space_name) + r"\right)^{" + str(hw[0]) + r" \times " + str(hw[1]) + "}"
    return out if frame_name is None else out + r"\,[" + latex_name(frame_name) + "]"


def _act_text(act) -> str:
    return act.name if not hasattr(act, "base") else f"Ω {act.base.name}(Φ z + τ) + γ"


def _weights_lines(Ws, first: int = 1) -> list:
    """``[W b]_i`` and its rows for each layer, numbered from ``first`` (the paper's 1)."""
    lines = []
    for l, W in enumerate(Ws, start=first):
        lines.append(f"  [W b]_{l} =")
        lines += ["  " + ln for ln in text_matrix(W)]
    return lines


def cnn_display(net, frames=None, weights=None) -> Display:
    """Display of an :class:`~geomkfac.networks.conv.AbstractCNN` in a choice of frames
    (:class:`~geomkfac.networks.conv.CNNFrames`): every layer's spaces with their frames and
    grids (a local space ``A`` at ``H × W`` locations), the patch spaces ``P_i = A^|Δ|``, the
    number ``|T_i|`` of locations sharing a convolution's weights, the activations in those
    frames (Eqn. D.3, the same at every location) and, given ``weights``, the matrices
    ``[W̄_i]`` (law F.4 / D.2). Parametrized layers are numbered ``i = 1..L`` and activation
    spaces ``A_0..A_L``, as in the paper and :mod:`geomkfac.networks.conv`.

    Examples
    --------
    >>> from geomkfac.networks.conv import AbstractCNN
    >>> net = AbstractCNN((1, 3, 3), [{"type": "conv", "out": 2, "k": 2, "act": "tanh"},
    ...                               {"type": "flatten"}, {"type": "dense", "out": 1}], name="c")
    >>> print(net.display())
    abstract CNN c: input 1×3×3 (channels × height × width), parametrized layers 1..2
    layer 1, conv 2×2 pad 0: c.A0 [ι_c.A0] on 3×3 → patches c.P1 = c.A0^4 → c.Z1 [ι_c.Z1] on 2×2 (|T| = 4) → c.A1 [ι_c.A1], φ_1 = tanh
    flatten: c.A1 on 2×2 → c.A1^4
    layer 2, dense: c.A1^4 [ι_c.A1 at every location] → c.Z2 [ι_c.Z2] → c.A2 [ι_c.A2], φ_2 = identity
    """
    fc = net.reference_frames() if frames is None else net._frames(frames)
    C, H, W = net.in_shape
    lines = [f"abstract CNN {net.name}: input {C}×{H}×{W} (channels × height × width), "
             f"parametrized layers 1..{net.L}"]
    rows = []
    for rec in net.layers:
        a_in, a_out = net.A[rec.a_in], net.A[rec.a_out]
        f_in, f_out = fc.A[rec.a_in], fc.A[rec.a_out]
        if rec.kind == "conv":
            l, g = rec.layer, rec.geom
            Z, fZ, P = net.Z.layer(l), fc.Z.layer(l), net.layer_inputs.layer(l)
            act = fc.activation(l)
            lines.append(
                f"layer {l}, conv {g.k}×{g.k} pad {g.pad}: {a_in.name} [{f_in.name}] on {_grid_text(g.in_hw)}"
                f" → patches {P.name} = {a_in.name}^{g.K} → {Z.name} [{fZ.name}] on {_grid_text(g.out_hw)}"
                f" (|T| = {g.T}) → {a_out.name} [{f_out.name}], φ_{l} = {_act_text(act)}")
            rows.append(
                _grid_power(a_in.name, g.in_hw, f_in.name)
                + r" \xrightarrow{\mathrm{patches}} \left(" + latex_name(a_in.name) + r"\right)^{" + str(g.K) + "}"
                + r" \xrightarrow{\omega_{" + str(l) + "}} " + _grid_power(Z.name, g.out_hw, fZ.name)
                + r" \xrightarrow{\varphi_{" + str(l) + "}} " + _grid_power(a_out.name, g.out_hw, f_out.name)
                + r",\quad \left|T_{" + str(l) + r"}\right| = " + str(g.T)
                + r",\quad \varphi_{" + str(l) + "} = " + _act_latex(act, fc, l))
        elif rec.kind in ("avgpool", "maxpool"):
            g = rec.geom
            what = "average" if rec.kind == "avgpool" else "max (a coordinate map, not affine)"
            lines.append(f"{rec.kind} {g.s}×{g.s}, {what}: {a_in.name} on {_grid_text(g.in_hw)}"
                         f" → {a_in.name} on {_grid_text(g.out_hw)}")
            op = r"\mathrm{avg}" if rec.kind == "avgpool" else r"\max"
            rows.append(_grid_power(a_in.name, g.in_hw) + r" \xrightarrow{" + op + " " + str(g.s)
                        + r" \times " + str(g.s) + "} " + _grid_power(a_in.name, g.out_hw))
        elif rec.kind == "flatten":
            T = rec.grid_in[0] * rec.grid_in[1]
            lines.append(f"flatten: {a_in.name} on {_grid_text(rec.grid_in)} → {a_in.name}^{T}")
            rows.append(_grid_power(a_in.name, rec.grid_in) + r" \xrightarrow{\mathrm{flatten}} \left("
                        + latex_name(a_in.name) + r"\right)^{" + str(T) + "}")
        else:  # dense
            l = rec.layer
            Z, fZ = net.Z.layer(l), fc.Z.layer(l)
            act = fc.activation(l)
            T = 1 if rec.grid_in is None else rec.grid_in[0] * rec.grid_in[1]
            src = a_in.name if T == 1 else f"{a_in.name}^{T}"
            where = f"[{f_in.name}]" if T == 1 else f"[{f_in.name} at every location]"
            lines.append(f"layer {l}, dense: {src} {where} → {Z.name} [{fZ.name}] → {a_out.name} [{f_out.name}],"
                         f" φ_{l} = {_act_text(act)}")
            src_l = _framed(a_in.name, f_in.name) if T == 1 else (
                r"\left(" + latex_name(a_in.name) + r"\right)^{" + str(T) + r"}\,[" + latex_name(f_in.name) + "]")
            rows.append(src_l + r" \xrightarrow{\omega_{" + str(l) + "}} " + _framed(Z.name, fZ.name)
                        + r" \xrightarrow{\varphi_{" + str(l) + "}} " + _framed(a_out.name, f_out.name)
                        + r",\quad \varphi_{" + str(l) + "} = " + _act_latex(act, fc, l))
    if weights is not None:
        Ws = net.layer_weights(weights, fc)
        lines += _weights_lines(Ws)
        rows += [r"\left[\bar{W}_{" + str(i) + r"}\right] = " + latex_matrix(Wi) for i, Wi in enumerate(Ws, start=1)]
    latex = (r"\mathrm{CNN}\ " + _upright(net.name) + r":\quad\begin{array}{l} " + r" \\ ".join(rows)
             + r" \end{array}")
    return Display("\n".join(lines), latex)


def rnn_display(net, frames=None, weights=None, h0=None) -> Display:
    """Display of an :class:`~geomkfac.networks.rnn.AbstractRNN` in a choice of frames
    (:class:`~geomkfac.networks.rnn.RNNFrames`, shared by all steps): the recurrent step
    ``ζ_t = ω(α_{t−1}, x_t)``, ``α_t = φ(ζ_t)`` (Eqn. 4.5) on ``A × X → Z → A``, the readout
    ``ρ : A → Y``, the frames, the activation in them (Eqn. D.3) and, given ``weights``
    (and the initial state ``h0``, a Point of ``A``), ``[W̄_1]``, ``[W̄_2]`` (law D.2) and
    the coordinates of ``α_0``. Layer 1 is the recurrent layer, layer 2 the readout (the
    paper's numbering ``i = 1..L``, as in :mod:`geomkfac.networks.rnn`).

    Examples
    --------
    >>> from geomkfac.networks.rnn import AbstractRNN
    >>> print(AbstractRNN(2, 1, 1, T=3, name="r").display())
    abstract RNN r: T = 3 steps, hidden 2, inputs 1, outputs 1 (at every step)
    layer 1, recurrent: (α_{t−1}, x_t) in r.A × r.X [ι_r.A, ι_r.X] → ζ_t in r.Z [ι_r.Z] → α_t in r.A [ι_r.A], φ = tanh (|T| = 3)
    layer 2, readout: α_t in r.A [ι_r.A] → υ_t in r.Y [ι_r.Y] at every step (|T| = 3)
    """
    fr = net.reference_frames() if frames is None else net._frames(frames)
    act = fr.activation()
    T1, T2 = net.scales
    every = net.output == "seq"
    lines = [
        f"abstract RNN {net.name}: T = {net.T} steps, hidden {net.hidden}, inputs {net.inputs}, "
        f"outputs {net.outputs} ({'at every step' if every else 'at the last step only'})",
        f"layer 1, recurrent: (α_{{t−1}}, x_t) in {net.A.name} × {net.X.name} [{fr.A.name}, {fr.X.name}]"
        f" → ζ_t in {net.Z.name} [{fr.Z.name}] → α_t in {net.A.name} [{fr.A.name}], φ = {_act_text(act)} (|T| = {T1})",
        f"layer 2, readout: α_t in {net.A.name} [{fr.A.name}] → υ_t in {net.Y.name} [{fr.Y.name}]"
        + (f" at every step (|T| = {T2})" if every else f" at step T = {net.T} only (|T| = 1)"),
    ]
    rows = [
        _framed(net.A.name, fr.A.name) + r" \times " + _framed(net.X.name, fr.X.name)
        + r" \xrightarrow{\omega} " + _framed(net.Z.name, fr.Z.name) + r" \xrightarrow{\varphi} "
        + _framed(net.A.name, fr.A.name) + r",\quad \zeta_{t} = \omega\left(\alpha_{t-1}, x_{t}\right),\ \alpha_{t} = "
        r"\varphi\left(\zeta_{t}\right),\ t = 1, \ldots, " + str(net.T) + r",\quad \varphi = " + _act_latex(act, fr, 1),
        _framed(net.A.name, fr.A.name) + r" \xrightarrow{\rho} " + _framed(net.Y.name, fr.Y.name) + r",\quad "
        + (r"\upsilon_{t} = \rho\left(\alpha_{t}\right),\ t = 1, \ldots, " + str(net.T) if every
           else r"\upsilon = \rho\left(\alpha_{" + str(net.T) + r"}\right)"),
    ]
    if weights is not None:
        Ws = net.layer_weights(weights, fr)
        lines += _weights_lines(Ws)
        rows += [r"\left[\bar{W}_{" + str(i) + r"}\right] = " + latex_matrix(Wi) for i, Wi in enumerate(Ws, start=1)]
    if h0 is not None:
        x0 = net._state(h0).coords(fr.A)
        lines.append(f"  α_0 in {fr.A.name} = (" + ", ".join(text_entry(e) for e in _flat(x0)) + ")")
        rows.append(r"\left[\alpha_{0}\right]_{" + latex_sub(fr.A.name) + "} = " + latex_matrix(x0))
    latex = (r"\mathrm{RNN}\ " + _upright(net.name) + r":\quad\begin{array}{l} " + r" \\ ".join(rows)
             + r" \end{array}")
    return Display("\n".join(lines), latex)


# --------------------------------------------------------------------------- derivations


def _pair(lines_a: list, lines_b: list, gap: str = "   ") -> list:
    """Two blocks of text side by side."""
    wa = max((len(x) for x in lines_a), default=0)
    n = max(len(lines_a), len(lines_b))
    a = lines_a + [""] * (n - len(lines_a))
    b = lines_b + [""] * (n - len(lines_b))
    return [x.ljust(wa) + gap + y for x, y in zip(a, b)]


def _side_by_side(blocks: Sequence[list]) -> list:
    out = list(blocks[0])
    for b in blocks[1:]:
        out = _pair(out, b)
    return [ln.rstrip() for ln in out]


def _block(label: str, M) -> list:
    return [label] + text_matrix(M)


def derivation(obj, frame) -> Display:
    """The transformation law of ``obj`` from its own frame ι into ``frame`` κ, with the
    matrices substituted, side by side, as text and LaTeX.

    * metric (any :class:`~geomkfac.metrics.Metric`): ``G_κ = B⁻ᵀ G_ι B⁻¹`` (B.4);
    * second moment: ``M_κ = [B]_H M_ι [B]_Hᵀ``;
    * point: ``x_κ = B x_ι + c``; vector: ``v_κ = B v_ι``; covector: ``w_κ = B⁻ᵀ w_ι``;
    * K-FAC (:class:`~geomkfac.metrics.KroneckerMetric`, ``frame`` induced by ``(κ_A, κ_Z)``):
      the A factor with ``[Ω]_H`` (the change on ``A``): ``A_κ = [Ω]_H A_ι [Ω]_Hᵀ``, and the
      G factor with ``Φ`` (the change ``κ_Z → ι_Z`` on ``Z``, ``z = Φ z‡ + τ``):
      ``G_κ = Φᵀ G_ι Φ``; the metric is ``A_κ ⊗ G_κ``.

    Here ``y = B x + c`` is the change ι → κ; ``(B, c)`` come from ``ι.change_to(κ)``, and
    each result is the object's own ``.matrix(κ)`` / ``.coords(κ)`` (computed by the
    library), shown beside the factors it is made of.

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.spaces import AffineSpace, Vector
    >>> from geomkfac.metrics import Metric
    >>> A = AffineSpace(1, "A")
    >>> kappa = A.reference_frame.derive([[2.]], [1.], name="κ")
    >>> print(derivation(Metric(A.reference_frame, [[8.]]), kappa))
    G_κ = B⁻ᵀ G_ι_A B⁻¹
    G_ι_A   B     c     B⁻¹     G_κ
    [8]     [2]   [1]   [0.5]   [2]
    >>> print(derivation(Vector(A.reference_frame, [3.]), kappa))
    v_κ = B v_ι_A
    v_ι_A   B     c     v_κ
    [3]     [2]   [1]   [6]
    """
    from geomkfac.metrics import KroneckerMetric, Metric, SecondMoment
    from geomkfac.spaces import Covector, Point, Vector

    if isinstance(obj, KroneckerMetric):
        return _kfac_derivation(obj, frame)
    src = obj.frame
    ch = src.change_to(frame)
    i_t, k_t = src.name, frame.name
    i_l, k_l = latex_sub(src.name), latex_sub(frame.name)
    B, c, Binv = ch.B, ch.c, ch.B_inv
    if isinstance(obj, Metric):
        law_t = f"G_{k_t} = B⁻ᵀ G_{i_t} B⁻¹"
        law_l = r"G_{" + k_l + r"} = B^{-\top} G_{" + i_l + r"} B^{-1}"
        before, after = obj.matrix(src), obj.matrix(frame)
        names = (f"G_{i_t}", f"G_{k_t}")
        lnames = ("G_{" + i_l + "}", "G_{" + k_l + "}")
        shown = [("B", B), ("c", c), ("B⁻¹", Binv)]
        lshown = [("B", B), ("c", c), ("B^{-1}", Binv)]
    elif isinstance(obj, SecondMoment):
        H = ch.homogeneous()
        law_t = f"M_{k_t} = [B]_H M_{i_t} [B]_Hᵀ"
        law_l = r"M_{" + k_l + r"} = [B]_{H} M_{" + i_l + r"} [B]_{H}^{\top}"
        before, after = obj.matrix(src), obj.matrix(frame)
        names = (f"M_{i_t}", f"M_{k_t}")
        lnames = ("M_{" + i_l + "}", "M_{" + k_l + "}")
        shown = [("[B]_H", H)]
        lshown = [("[B]_{H}", H)]
    elif isinstance(obj, (Point, Vector, Covector)):
        before, after = obj.coords(src), obj.coords(frame)
        s = {"point": "x", "vector": "v", "covector": "w"}[obj._kind]
        names = (f"{s}_{i_t}", f"{s}_{k_t}")
        lnames = (s + "_{" + i_l + "}", s + "_{" + k_l + "}")
        if isinstance(obj, Point):
            law_t, law_l = f"x_{k_t} = B x_{i_t} + c", "x_{" + k_l + "} = B x_{" + i_l + "} + c"
            shown, lshown = [("B", B), ("c", c)], [("B", B), ("c", c)]
        elif isinstance(obj, Vector):
            law_t, law_l = f"v_{k_t} = B v_{i_t}", "v_{" + k_l + "} = B v_{" + i_l + "}"
            shown, lshown = [("B", B), ("c", c)], [("B", B), ("c", c)]
        else:
            law_t, law_l = f"w_{k_t} = B⁻ᵀ w_{i_t}", "w_{" + k_l + r"} = B^{-\top} w_{" + i_l + "}"
            shown, lshown = [("B", B), ("c", c), ("B⁻¹", Binv)], [("B", B), ("c", c), ("B^{-1}", Binv)]
    else:
        raise SpaceMismatchError(
            f"derivation shows the law of a Metric, SecondMoment, KroneckerMetric, Point, Vector or Covector, "
            f"got {type(obj).__name__}"
        )
    blocks = [_block(names[0], before)] + [_block(n, M) for n, M in shown] + [_block(names[1], after)]
    text = "\n".join([law_t] + _side_by_side(blocks))
    items = [lnames[0] + " = " + latex_matrix(before)] + [n + " = " + latex_matrix(M) for n, M in lshown]
    latex = (
        r"\begin{aligned} & " + law_l + r" \\ & " + r",\quad ".join(items) + r" \\ & "
        + lnames[1] + " = " + latex_matrix(after) + r" \end{aligned}"
    )
    return Display(text, latex)


def _kfac_derivation(g, frame) -> Display:
    if frame.space is not g.space or frame.induced_by is None:
        raise SpaceMismatchError(
            f"the K-FAC law is shown in a frame of {g.space.name} induced by frames on its domain and "
            "codomain (AffineMaps.frame(frame_A, frame_Z))"
        )
    (iA, iZ), (kA, kZ) = (g.second_moment.frame, g.metric_on_Z.frame), frame.induced_by
    chA = iA.change_to(kA)
    Phi = kZ.change_to(iZ).B  # z = Φ z‡ + τ
    OmH = chA.homogeneous()
    A0, A1 = g.second_moment.matrix(iA), g.second_moment.matrix(kA)
    G0, G1 = g.metric_on_Z.matrix(iZ), g.metric_on_Z.matrix(kZ)
    t = [
        f"K-FAC block A ⊗ G from ({iA.name}, {iZ.name}) to ({kA.name}, {kZ.name}):",
        f"A_{kA.name} = [Ω]_H A_{iA.name} [Ω]_Hᵀ",
    ]
    t += _side_by_side([_block(f"A_{iA.name}", A0), _block("[Ω]_H", OmH), _block(f"A_{kA.name}", A1)])
    t += [f"G_{kZ.name} = Φᵀ G_{iZ.name} Φ"]
    t += _side_by_side([_block(f"G_{iZ.name}", G0), _block("Φ", Phi), _block(f"G_{kZ.name}", G1)])
    t += [f"g = A_{kA.name} ⊗ G_{kZ.name}"]
    la = [latex_sub(x.name) for x in (iA, iZ, kA, kZ)]
    latex = (
        r"\begin{aligned} & A_{" + la[2] + r"} = [\Omega]_{H} A_{" + la[0] + r"} [\Omega]_{H}^{\top}:\quad A_{" + la[0] + "} = "
        + latex_matrix(A0) + r",\quad [\Omega]_{H} = " + latex_matrix(OmH) + r",\quad A_{" + la[2] + "} = " + latex_matrix(A1)
        + r" \\ & G_{" + la[3] + r"} = \Phi^{\top} G_{" + la[1] + r"} \Phi:\quad G_{" + la[1] + "} = " + latex_matrix(G0)
        + r",\quad \Phi = " + latex_matrix(Phi) + r",\quad G_{" + la[3] + "} = " + latex_matrix(G1)
        + r" \\ & g = A_{" + la[2] + r"} \otimes G_{" + la[3] + r"} \end{aligned}"
    )
    return Display("\n".join(t), latex)
