"""Affine invariance of undamped K-FAC in the layer backend: Theorem 4.1 (convolutions) and
Theorem 4.2 (recurrent networks). A network and its reparameterization by a change of
frame of the activation / pre-activation spaces — the same (Ω, γ), (Φ, τ) at every location
or step, the patch coordinates changed by Ω ⊗ I (channel-major patches), the padding point
and the initial state moved with the frame — compute the same function; undamped K-FAC
keeps them equal for 50 steps. Negative controls with the same check: SGD, Adam, damped
K-FAC, zero padding in the changed frame, a change that differs between locations, an
initial state left untransformed, max pooling between the layers.

Tolerance: the two runs evaluate the same updates through different coordinates; round-off
is amplified by the undamped solves (conditioning ≲ 1e4) over 50 steps, so outputs agree to
~1e-10 and we require 1e-7; the controls differ by ≥ 1e-3.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from geomkfac.prove import find_proofs_dir

sys.path.insert(0, str(find_proofs_dir()))
from _layer_pairs import KFAC, cnn_pair, gap_after, rnn_pair  # noqa: E402  (shared with the proofs)

TOL, CONTROL = 1e-7, 1e-3

# --------------------------------------------------------------------------- convolutions


def test_cnn_pair_is_one_function():
    net, net2, X, _ = cnn_pair()
    np.testing.assert_allclose(net2.forward(X), net.forward(X), rtol=0, atol=1e-12)


def test_thm4_1_undamped_kfac_is_invariant_for_cnns():
    net, net2, X, Y = cnn_pair()
    gap, losses = gap_after(net, net2, X, Y, "kfac", dict(lr=0.2, **KFAC))
    assert gap < TOL
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name, hyper", [
    ("sgd", dict(lr=0.1)), ("adam", dict(lr=1e-2)), ("kfac", dict(lr=0.2, **dict(KFAC, damping=1.0)))])
def test_thm4_1_controls_optimizers(name, hyper):
    net, net2, X, Y = cnn_pair()
    gap, _ = gap_after(net, net2, X, Y, name, hyper, steps=10)
    assert gap > CONTROL


def test_thm4_1_control_zero_padding_in_the_changed_frame():
    """With padding in layer 2 the border must be padded with γ1, the frame's image of the
    old zero; padding with zeros changes the function already at the start."""
    net, net2, X, _ = cnn_pair(pad2=1)
    assert np.abs(net2.forward(X) - net.forward(X)).max() > CONTROL


def test_thm4_1_control_change_differing_between_locations():
    net, net2, X, _ = cnn_pair(per_location=True)
    assert np.abs(net2.forward(X) - net.forward(X)).max() > CONTROL


def test_thm4_1_control_max_pooling():
    """Max pooling is not affine: between the changed frames it does not commute with
    a ↦ Ω a + γ (Ω not a positive scaling), so the networks already differ."""
    net, net2, X, _ = cnn_pair(pool="max")
    assert np.abs(net2.forward(X) - net.forward(X)).max() > CONTROL


# --------------------------------------------------------------------------- recurrent


def test_rnn_pair_is_one_function():
    net, net2, X, X2, _ = rnn_pair()
    np.testing.assert_allclose(net2.forward(X2), net.forward(X), rtol=0, atol=1e-12)


def test_thm4_2_undamped_kfac_is_invariant_for_rnns():
    net, net2, X, X2, Y = rnn_pair()
    gap, losses = gap_after(net, net2, X, Y, "kfac", dict(lr=0.2, **KFAC), X2=X2)
    assert gap < TOL
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("name, hyper", [("sgd", dict(lr=0.05)), ("adam", dict(lr=1e-2))])
def test_thm4_2_controls_optimizers(name, hyper):
    net, net2, X, X2, Y = rnn_pair()
    gap, _ = gap_after(net, net2, X, Y, name, hyper, steps=10, X2=X2)
    assert gap > CONTROL


@pytest.mark.parametrize("kw", [dict(transform_h0=False), dict(per_step=True)],
                         ids=["h0-not-transformed", "change-differs-between-steps"])
def test_thm4_2_controls_frames(kw):
    net, net2, X, X2, _ = rnn_pair(**kw)
    assert np.abs(net2.forward(X2) - net.forward(X)).max() > CONTROL
