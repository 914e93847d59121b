"""Displays and derivations (geomkfac.display): every string on a known object in two frames,
and every LaTeX string checked to be well-formed math."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

from geomkfac.display import GREEK, derivation, latex_entry, latex_name, text_entry
from geomkfac.maps import AffineMap, AffineMaps
from geomkfac.metrics import KroneckerMetric, Metric, Pullback, SecondMoment, additive_metric
from geomkfac.networks import AbstractMLP, centering
from geomkfac.spaces import AffineSpace, Covector, Point, Vector, product_frame


def check_math(tex: str) -> str:
    """Fail unless ``tex`` is well-formed math: balanced braces and environments, no raw
    Unicode Greek (or other non-ASCII), no nested subscript, no ``$``, no float ``1.0``."""
    assert "$" not in tex, tex
    assert all(ord(ch) < 128 for ch in tex), f"non-ASCII in {tex!r}"
    assert not any(ch in tex for ch in GREEK), tex
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += ch == "{"
        depth -= ch == "}"
        assert depth >= 0, f"unbalanced braces in {tex!r}"
    assert depth == 0, f"unbalanced braces in {tex!r}"
    assert re.findall(r"\\begin\{(\w+)\}", tex) == re.findall(r"\\end\{(\w+)\}", tex)[::-1] or \
        sorted(re.findall(r"\\begin\{(\w+)\}", tex)) == sorted(re.findall(r"\\end\{(\w+)\}", tex)), tex
    # no nested subscripts: inside the group of a `_{`, no unescaped `_`
    for m in re.finditer(r"(?<!\\)_\{", tex):
        i, d = m.end(), 1
        while d:
            d += tex[i] == "{"
            d -= tex[i] == "}"
            if d and tex[i] == "_" and tex[i - 1] != "\\":
                raise AssertionError(f"nested subscript in {tex!r}")
            i += 1
    assert not re.search(r"(?<![\d.])\d+\.0(?!\d)", tex), f"integer shown as float in {tex!r}"
    return tex


def test_checker_rejects_bad_latex():
    """Negative controls of the checker itself."""
    for bad in [r"G_{\iota", r"G_{ι}", r"G_{a_{b}}", r"x = 1.0", r"\begin{pmatrix} 1 \end{bmatrix}}"]:
        with pytest.raises(AssertionError):
            check_math(bad)
    check_math(r"G_{\iota\left(\mathrm{A}\right)}^{\mathrm{net}} = 1.5")


@pytest.mark.parametrize(
    "name, tex",
    [
        ("ι", r"\iota"), ("κ", r"\kappa"), ("κ2", r"\kappa_{2}"), ("A0", "A_{0}"),
        ("net.A0", r"A_{0}^{\mathrm{net}}"), ("ι_A", r"\iota_{\mathrm{A}}"),
        ("ι_tiny.W", r"\iota_{\mathrm{tiny.W}}"), ("ι_net.A1‡", r"\iota_{\mathrm{net.A1}}^{\ddagger}"),
        ("A × B", r"A \times B"), ("A^2", "A^{2}"), ("Vector", r"\mathrm{Vector}"),
        ("(κ, ι_Z)", r"\left(\kappa, \iota_{\mathrm{Z}}\right)"),
        ("Aff(A, Z)", r"\mathrm{Aff}\left(A, Z\right)"),
    ],
)
def test_latex_names(name, tex):
    assert latex_name(name) == tex
    check_math(tex)


def test_entries_integers_stay_integers():
    assert [latex_entry(x) for x in (1.0, -0.0, 2, np.float64(-3.0), sp.Float(4.0), 0.5)] == ["1", "0", "2", "-3", "4", "0.5"]
    assert text_entry(sp.Rational(-1, 3)) == "-1/3"
    assert latex_entry(sp.Rational(-1, 3)) == r"- \frac{1}{3}"
    assert latex_entry(sp.Symbol("θ")) == r"{\theta}"


@pytest.fixture
def plane():
    A = AffineSpace(2, "A")
    kappa = A.reference_frame.derive(np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([5.0, 0.0]), name="κ")
    return A, kappa


def test_metric_two_frames(plane):
    A, kappa = plane
    g = Metric(A.reference_frame, np.array([[2.0, 0.0], [0.0, 1.0]]))
    assert str(g.display()) == "G in ι_A (metric on A):\n[2  0]\n[0  1]"
    assert str(g.display(kappa)) == "G in κ (metric on A):\n[ 2  -2]\n[-2   3]"
    assert g.latex() == r"G_{\iota\left(\mathrm{A}\right)} = \begin{pmatrix} 2 & 0 \\ 0 & 1 \end{pmatrix}"
    assert g.latex(kappa) == r"G_{\kappa} = \begin{pmatrix} 2 & -2 \\ -2 & 3 \end{pmatrix}"
    assert g._repr_latex_() == "$" + g.latex() + "$"
    assert sp.latex(g) == g.latex()
    assert "[2  0]" in sp.pretty(g)
    for t in (g.latex(), g.latex(kappa)):
        check_math(t)


def test_values_two_frames(plane):
    A, kappa = plane
    p, v, w = Point(A.reference_frame, [1.0, 2.0]), Vector(A.reference_frame, [1.0, 2.0]), Covector(A.reference_frame, [1.0, 2.0])
    assert str(p.display()) == "Point of A in ι_A: (1, 2)"
    assert str(p.display(kappa)) == "Point of A in κ: (8, 2)"
    assert str(v.display(kappa)) == "Vector of A in κ: (3, 2)"
    assert str(w.display(kappa)) == "Covector of A in κ: (1, 1)"
    assert p.latex(kappa) == r"\left[p\right]_{\kappa} = \begin{pmatrix} 8 \\ 2 \end{pmatrix}"
    assert w.latex() == r"\left[\omega\right]_{\iota\left(\mathrm{A}\right)} = \begin{pmatrix} 1 \\ 2 \end{pmatrix}"
    assert sp.latex(v) == r"\left[v\right]_{\iota\left(\mathrm{A}\right)} = \begin{pmatrix} 1 \\ 2 \end{pmatrix}"
    for x in (p, v, w):
        check_math(x.latex())
        check_math(x.latex(kappa))


def test_frames_changes_spaces(plane):
    A, kappa = plane
    d = kappa.display()
    assert "origin = (-5, 0)" in str(d) and "[1  -1]" in str(d)
    assert kappa.latex() == (
        r"o_{\kappa} = \begin{pmatrix} -5 \\ 0 \end{pmatrix},\quad \left(e_{\kappa,j}\right)_{j} = "
        r"\begin{pmatrix} 1 & -1 \\ 0 & 1 \end{pmatrix}\quad\text{in } \iota\left(\mathrm{A}\right)"
    )
    # seen from κ itself: origin 0 and the standard basis
    assert "origin = (0, 0)" in str(kappa.display(kappa))
    ch = A.reference_frame.change_to(kappa)
    assert str(ch.display()) == "change ι_A → κ: y = B x + c\nB =\n[1  1]\n[0  1]\nc = (5, 0)"
    assert str(ch.inverse().display()).splitlines()[-1] == "c = (-5, 0)"
    assert A.display(kappa).text.startswith("affine space A, dim 2, frame κ")
    for t in (kappa.latex(), kappa.latex(kappa), ch.latex(), ch.inverse().latex(), A.latex(), A.latex(kappa)):
        check_math(t)


def test_affine_map_and_second_moment_two_frames():
    A, Z = AffineSpace(1, "A"), AffineSpace(1, "Z")
    f = AffineMap(A.reference_frame, Z.reference_frame, [[2.0]], [1.0])
    kA = A.reference_frame.derive([[2.0]], name="κA")
    assert f.latex() == r"\left[\bar{W}\right]_{\iota\left(\mathrm{A}\right),\iota\left(\mathrm{Z}\right)} = \begin{pmatrix} 2 & 1 \end{pmatrix}"
    assert str(f.display(kA)) == "[W b] of A → Z in (κA, ι_Z):\n[1  1]"
    S = SecondMoment(A.reference_frame, [[5.0, 2.0], [2.0, 1.0]])
    centered = A.reference_frame.derive([[1.0]], [-2.0], name="c")
    assert str(S.display(centered)) == "A in c (second moment on A):\n[1  0]\n[0  1]"
    for t in (f.latex(), f.latex(kA), S.latex(), S.latex(centered)):
        check_math(t)


def test_kronecker_additive_pullback_two_frames():
    A, Z = AffineSpace(1, "A"), AffineSpace(1, "Z")
    S = SecondMoment(A.reference_frame, [[2.0, 1.0], [1.0, 1.0]])
    g = KroneckerMetric(S, Metric(Z.reference_frame, [[4.0]]))
    kA = A.reference_frame.derive([[1.0]], [-1.0], name="κA")
    kZ = Z.reference_frame.derive([[2.0]], name="κZ")
    F = AffineMaps(A, Z).frame(kA, kZ)
    assert str(g.display()).splitlines()[1:] == ["A in ι_A:", "[2  1]", "[1  1]", "G in ι_Z:", "[4]"]
    assert str(g.display(F)).splitlines()[1:] == ["A in κA:", "[1  0]", "[0  1]", "G in κZ:", "[1]"]
    assert g.latex(F) == (
        r"A_{\mathrm{{\kappa}A}} \otimes G_{\mathrm{{\kappa}Z}} = \begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}"
        r" \otimes \begin{pmatrix} 1 \end{pmatrix}"
    )
    B = AffineSpace(1, "B")
    h = additive_metric([Metric(A.reference_frame, [[2.0]]), Metric(B.reference_frame, [[3.0]])])
    P = product_frame([kA, B.reference_frame])
    assert str(h.display(P)).splitlines()[1:] == ["block 0 (in κA):", "[2]", "block 1 (in ι_B):", "[3]"]
    phi = AffineMap(A.reference_frame, Z.reference_frame, [[3.0]])
    pb = Pullback(Metric(Z.reference_frame, [[1.0]]), phi)
    assert str(pb.display(kZ if False else A.reference_frame.derive([[3.0]], name="t"))) == "G in t (pullback metric on A):\n[1]"
    for t in (g.latex(), g.latex(F), h.latex(), h.latex(P), pb.latex()):
        check_math(t)


def test_symbolic_display_simplifies_for_display_only():
    A = AffineSpace(2, "A")
    th = sp.Symbol("θ")
    R = sp.Matrix([[sp.cos(th), -sp.sin(th)], [sp.sin(th), sp.cos(th)]])
    rot = A.reference_frame.derive(R, name="ρ")
    g = Metric(A.reference_frame, sp.eye(2) * 2)
    M = g.matrix(rot)
    assert M != sp.eye(2) * 2  # stored as computed (trig not simplified)
    assert str(g.display(rot)) == "G in ρ (metric on A):\n[2  0]\n[0  2]"
    check_math(g.latex(rot))
    s = sp.Symbol("s", positive=True)
    ks = A.reference_frame.derive(sp.Matrix([[s, 0], [0, 1]]), name="σ")
    h = Metric(A.reference_frame, [[0.1, 0.0], [0.0, 1.0]])
    assert h.latex(ks) == r"G_{\sigma} = \begin{pmatrix} \frac{0.1}{s^{2}} & 0 \\ 0 & 1 \end{pmatrix}"
    check_math(h.latex(ks))


def test_network_display_two_frame_choices():
    net = AbstractMLP([2, 2, 1], ["tanh", "identity"], name="net")
    ref = net.reference_frames()
    kappa = ref.derive({1: centering(np.array([0.5, 0.25]))})
    w = net.weights_from([np.array([[1.0, 0.0, 0.5], [0.0, 2.0, 0.0]]), np.array([[1.0, -1.0, 0.0]])])
    t_ref, t_k = str(net.display(ref, w)), str(net.display(kappa, w))
    assert "φ_1 = tanh" in t_ref and "φ_1 = Ω tanh(Φ z + τ) + γ" in t_k
    assert "[1  -1  0]" in t_ref and "[1  -1  0.25]" in t_k  # b_2 absorbs the centering: 0.5 - 0.25
    assert str(kappa.display()) == str(net.display(kappa))
    for t in (net.latex(), net.latex(kappa, w), kappa.latex(), sp.latex(net)):
        check_math(t)
    assert r"A_{0}^{\mathrm{net}}" in net.latex()


def test_derivations_metric_point_vector_covector(plane):
    A, kappa = plane
    g = Metric(A.reference_frame, np.array([[2.0, 0.0], [0.0, 1.0]]))
    d = derivation(g, kappa)
    assert str(d).splitlines() == [
        "G_κ = B⁻ᵀ G_ι_A B⁻¹",
        "G_ι_A    B        c     B⁻¹       G_κ",
        "[2  0]   [1  1]   [5]   [1  -1]   [ 2  -2]",
        "[0  1]   [0  1]   [0]   [0   1]   [-2   3]",
    ]
    # the shown result is B⁻ᵀ G B⁻¹ recomputed here from the shown factors
    Binv = np.linalg.inv(np.array([[1.0, 1.0], [0.0, 1.0]]))
    assert np.allclose(Binv.T @ np.diag([2.0, 1.0]) @ Binv, [[2, -2], [-2, 3]])
    assert g.derivation(kappa).latex == d.latex
    assert str(derivation(Point(A.reference_frame, [1.0, 2.0]), kappa)).splitlines()[0] == "x_κ = B x_ι_A + c"
    assert str(derivation(Vector(A.reference_frame, [1.0, 2.0]), kappa)).splitlines()[-1].endswith("[2]")
    dw = str(derivation(Covector(A.reference_frame, [1.0, 2.0]), kappa)).splitlines()
    assert dw[0] == "w_κ = B⁻ᵀ w_ι_A" and dw[2].endswith("[1]") and dw[3].endswith("[1]")
    for obj in (g, Point(A.reference_frame, [1.0, 2.0]), Vector(A.reference_frame, [1.0, 2.0]), Covector(A.reference_frame, [1.0, 2.0])):
        check_math(derivation(obj, kappa).latex)
        check_math(derivation(obj, A.reference_frame).latex)


def test_derivation_kfac():
    A, Z = AffineSpace(1, "A"), AffineSpace(1, "Z")
    g = KroneckerMetric(SecondMoment(A.reference_frame, [[5.0, 2.0], [2.0, 1.0]]), Metric(Z.reference_frame, [[4.0]]))
    kA = A.reference_frame.derive([[1.0]], [-2.0], name="κA")  # centering: a' = a - 2
    kZ = Z.reference_frame.derive([[2.0]], name="κZ")  # z' = 2 z, so Φ = 1/2
    d = derivation(g, AffineMaps(A, Z).frame(kA, kZ))
    lines = str(d).splitlines()
    assert lines[1] == "A_κA = [Ω]_H A_ι_A [Ω]_Hᵀ"
    assert lines[3:5] == ["[5  2]   [1  -2]   [1  0]", "[2  1]   [0   1]   [0  1]"]
    assert lines[5] == "G_κZ = Φᵀ G_ι_Z Φ"
    assert lines[7] == "[4]     [0.5]   [1]"
    check_math(d.latex)
    assert r"[\Omega]_{H}" in d.latex and r"\Phi = \begin{pmatrix} 0.5 \end{pmatrix}" in d.latex


def test_kfac_metric_of_a_network_displays_and_derives_in_a_frame_choice():
    from geomkfac.kfac import kfac_metric

    net = AbstractMLP([2, 2, 1], ["tanh", "identity"], name="net")
    w = net.weights_from([np.array([[1.0, 0.0, 0.5], [0.0, 2.0, 0.0]]), np.array([[1.0, -1.0, 0.0]])])
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g = kfac_metric(net, w, x, "gaussian")
    kappa = net.reference_frames().derive({1: centering(np.array([0.5, 0.25]))})
    blk = g.metrics[1]  # layer 2: A factor on A_1 (centered in κ), G factor on Z_2
    F = kappa.weight_frame(2)
    d = derivation(blk, F)
    A_k, G_k = blk.factors(*F.induced_by)
    # the shown A factor is [Ω]_H A [Ω]_Hᵀ, recomputed here from the centering (Ω = I, γ = -μ)
    H = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.25], [0.0, 0.0, 1.0]])
    A_i = blk.second_moment.matrix()
    assert np.allclose(H @ A_i @ H.T, A_k)
    shown = str(d).splitlines()[3:6]  # the rows of A_ι, [Ω]_H, A_κ side by side
    assert [ln.endswith(row.rstrip()) for ln, row in zip(shown, text_matrix_lines(A_k))] == [True] * 3
    for t in (d.latex, g.latex(), g.latex(kappa.weight_space_frame), blk.latex(F), net.latex(kappa, w)):
        check_math(t)


def text_matrix_lines(M):
    from geomkfac.display import text_matrix

    return text_matrix(M)
