"""Displays of the abstract CNN and RNN (geomkfac.display.cnn_display / rnn_display): each
network shown in two choices of frames, the weights checked against the laws F.4 / D.2
worked out by hand here, and every LaTeX string checked to be well-formed math."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

from geomkfac.networks.conv import AbstractCNN
from geomkfac.networks.rnn import AbstractRNN, LayerChange
from test_display import check_math


def check_scripts(tex: str) -> str:
    """``check_math`` and no double superscript / subscript (``x^{a}^{b}``, ``x_{a}_{b}``,
    which TeX refuses)."""
    check_math(tex)
    for m in re.finditer(r"(?<!\\)([_^])\{", tex):
        i, d = m.end(), 1
        while d:
            d += tex[i] == "{"
            d -= tex[i] == "}"
            i += 1
        assert not tex.startswith(m.group(1), i), f"double {m.group(1)} at {tex[max(0, m.start() - 30):i + 5]!r}"
    return tex


def test_checker_rejects_double_scripts():
    for bad in (r"A_{0}^{\mathrm{net}}^{2 \times 2}", r"x_{1}_{2}"):
        with pytest.raises(AssertionError, match="double"):
            check_scripts(bad)
    check_scripts(r"\left(A_{0}^{\mathrm{net}}\right)^{2 \times 2}\,[\iota_{\mathrm{A}}^{\ddagger}]")


@pytest.fixture
def cnn():
    net = AbstractCNN((1, 3, 3), [{"type": "conv", "out": 2, "k": 2, "pad": 0, "act": "tanh"},
                                  {"type": "flatten"}, {"type": "dense", "out": 1, "act": "identity"}], name="c")
    # layer 1, conv: W (2, 4) on the 4 offsets of a 1-channel patch, b; layer 2, dense:
    # 1 x (4 locations * 2) + b
    W1 = np.array([[2.0, 0.0, 0.0, 2.0, 1.0], [0.0, 4.0, 0.0, 0.0, 0.0]])
    W2 = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.5]])
    w = net.weights_from([W1, W2])
    # input change a‡ = 2 a + 1 on A0 (the pixels)
    kappa = net.reference_frames().derive(A={0: (np.array([[2.0]]), np.array([1.0]))})
    return net, w, kappa


def test_cnn_display_in_two_frames(cnn):
    net, w, kappa = cnn
    t_ref, t_k = str(net.display(weights=w)), str(net.display(kappa, w))
    assert t_ref.splitlines()[:4] == [
        "abstract CNN c: input 1×3×3 (channels × height × width), parametrized layers 1..2",
        "layer 1, conv 2×2 pad 0: c.A0 [ι_c.A0] on 3×3 → patches c.P1 = c.A0^4 → c.Z1 [ι_c.Z1] on 2×2 "
        "(|T| = 4) → c.A1 [ι_c.A1], φ_1 = tanh",
        "flatten: c.A1 on 2×2 → c.A1^4",
        "layer 2, dense: c.A1^4 [ι_c.A1 at every location] → c.Z2 [ι_c.Z2] → c.A2 [ι_c.A2], φ_2 = identity",
    ]
    assert "  [W b]_1 =" in t_ref.splitlines() and "  [W b]_2 =" in t_ref.splitlines()
    assert "c.A0 [ι_c.A0‡] on 3×3" in t_k
    # F.4 by hand: a = (a‡ − 1)/2 in every patch entry, so W‡ = W / 2 and b‡ = b − W‡ 1
    assert "  [2  0  0  2  1]" in t_ref.splitlines() and "  [0  4  0  0  0]" in t_ref.splitlines()
    assert "  [1  0  0  1  -1]" in t_k.splitlines() and "  [0  2  0  0  -2]" in t_k.splitlines()
    # the dense layer reads A1, whose frame did not change: the same matrix in both
    assert t_ref.splitlines()[-1] == t_k.splitlines()[-1] == "  [1  0  0  0  0  0  0  -1  0.5]"
    assert str(kappa.display()) == str(net.display(kappa))
    for tex in (net.latex(), net.latex(kappa, w), kappa.latex(), sp.latex(net), net._repr_latex_()[1:-1]):
        check_scripts(tex)
    assert net._repr_latex_() == "$" + net.latex() + "$"
    assert r"\left(A_{0}^{\mathrm{c}}\right)^{3 \times 3}\,[\iota_{\mathrm{c.A0}}^{\ddagger}]" in net.latex(kappa)
    assert r"\left|T_{1}\right| = 4" in net.latex() and r"\xrightarrow{\omega_{1}}" in net.latex()
    assert r"\left[\bar{W}_{2}\right]" in net.latex(weights=w) and r"\bar{W}_{0}" not in net.latex(weights=w)


def test_cnn_display_activation_in_changed_frames_and_pooling():
    net = AbstractCNN((2, 4, 4), [{"type": "conv", "out": 3, "k": 3, "pad": 1, "act": "softplus"},
                                  {"type": "maxpool", "k": 2}, {"type": "avgpool", "k": 2},
                                  {"type": "flatten"}, {"type": "dense", "out": 2}], name="p")
    kappa = net.reference_frames().derive(A={1: (2 * np.eye(3), np.ones(3))}, Z={1: (np.eye(3), np.ones(3))})
    t_ref, t_k = str(net.display()), str(net.display(kappa))
    assert "φ_1 = softplus" in t_ref and "φ_1 = Ω softplus(Φ z + τ) + γ" in t_k  # D.3
    assert "maxpool 2×2, max (a coordinate map, not affine): p.A1 on 4×4 → p.A1 on 2×2" in t_ref
    assert "avgpool 2×2, average: p.A1 on 2×2 → p.A1 on 1×1" in t_ref
    assert "(|T| = 16)" in t_ref and "p.Z1 [ι_p.Z1‡]" in t_k and "p.Z2 [ι_p.Z2]" in t_k
    tex = check_scripts(net.latex(kappa))
    assert r"\Omega\, \mathrm{softplus}(\Phi z + \tau) + \gamma" in tex and r"\xrightarrow{\max 2 \times 2}" in tex
    check_scripts(net.latex())


@pytest.fixture
def rnn():
    net = AbstractRNN(2, 1, 1, T=3, output="last", name="r")
    Wr = np.array([[2.0, 0.0, 1.0, 0.0], [0.0, 2.0, 1.0, 0.0]])  # [W_h W_x b]
    Wo = np.array([[2.0, 4.0, 0.0]])
    w, h0 = net.weights_from(Wr, Wo), net.initial_state([1.0, 0.0])
    kappa = net.reference_frames().derive(hidden=LayerChange(Omega=2 * np.eye(2), gamma=np.ones(2)))
    return net, w, h0, kappa


def test_rnn_display_in_two_frames(rnn):
    net, w, h0, kappa = rnn
    t_ref, t_k = str(net.display(weights=w, h0=h0)).splitlines(), str(net.display(kappa, w, h0)).splitlines()
    assert t_ref[:3] == [
        "abstract RNN r: T = 3 steps, hidden 2, inputs 1, outputs 1 (at the last step only)",
        "layer 1, recurrent: (α_{t−1}, x_t) in r.A × r.X [ι_r.A, ι_r.X] → ζ_t in r.Z [ι_r.Z] → "
        "α_t in r.A [ι_r.A], φ = tanh (|T| = 3)",
        "layer 2, readout: α_t in r.A [ι_r.A] → υ_t in r.Y [ι_r.Y] at step T = 3 only (|T| = 1)",
    ]
    assert t_ref[3] == "  [W b]_1 =" and t_ref[6] == "  [W b]_2 ="
    assert "φ = Ω tanh(Φ z + τ) + γ" in t_k[1] and "[ι_r.A‡, ι_r.X]" in t_k[1]
    # D.2 by hand: h = (h‡ − 1)/2, so W_h‡ = W_h / 2, b‡ = b − W_h 1 / 2; the readout likewise;
    # the initial state is a point: α_0 = (1, 0) has coordinates 2·(1, 0) + 1 = (3, 1) in κ
    assert t_ref[4:6] == ["  [2  0  1  0]", "  [0  2  1  0]"] and t_ref[7] == "  [2  4  0]"
    assert t_k[4:6] == ["  [1  0  1  -1]", "  [0  1  1  -1]"] and t_k[7] == "  [1  2  -3]"
    assert t_ref[-1] == "  α_0 in ι_r.A = (1, 0)" and t_k[-1] == "  α_0 in ι_r.A‡ = (3, 1)"
    assert str(kappa.display()) == str(net.display(kappa))
    for tex in (net.latex(), net.latex(kappa, w, h0), kappa.latex(), sp.latex(net)):
        check_scripts(tex)
    assert r"\upsilon = \rho\left(\alpha_{3}\right)" in net.latex()
    assert r"\left[\alpha_{0}\right]_{\iota\left(\mathrm{r.A}\right)^{\ddagger}} = \begin{pmatrix} 3 \\ 1 \end{pmatrix}" \
        in net.latex(kappa, w, h0)


def test_rnn_display_symbolic_weights_and_sequence_output():
    net = AbstractRNN(1, 1, 1, T=2, name="s")
    a, b = sp.symbols("a b")
    w = net.weights_from(sp.Matrix([[a, 1, 0]]), sp.Matrix([[b, 0]]))
    s = sp.Symbol("s", positive=True)
    kappa = net.reference_frames().derive(hidden=LayerChange(Omega=sp.Matrix([[s]]), gamma=sp.Matrix([0])))
    text = str(net.display(kappa, w))
    assert "at every step (|T| = 2)" in text
    # a‡ = s a on A only (Z unchanged): the columns acting on the hidden state are divided by s
    assert "  [a/s  1  0]" in text.splitlines() and "  [b/s  0]" in text.splitlines()
    tex = check_scripts(net.latex(kappa, w))
    assert r"\frac{b}{s}" in tex and r"\upsilon_{t} = \rho\left(\alpha_{t}\right)" in tex


def test_display_refuses_frames_of_another_network(cnn, rnn):
    from geomkfac.errors import SpaceMismatchError

    net, _, _ = cnn
    other = AbstractCNN((1, 3, 3), [{"type": "conv", "out": 2, "k": 2}, {"type": "flatten"},
                                    {"type": "dense", "out": 1}], name="o")
    with pytest.raises(SpaceMismatchError):
        net.display(other.reference_frames())
    rnet = rnn[0]
    with pytest.raises(SpaceMismatchError):
        rnet.display(AbstractRNN(2, 1, 1, T=3, name="o").reference_frames())
