"""Part 2 widget (nfutils/widgets.py, amortized-flow section): the θ slider redraws."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from nfutils import widgets
from nfutils.amortized import AmortizedPlanarFlow, ring_energy


def _control(widget, description):
    return next(c for c in widget.children if getattr(c, "description", None) == description)


def test_theta_slider_redraws_target_and_q():
    torch.manual_seed(0)
    model = AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8)
    slider = widgets.theta_slider(model, ring_energy, num_samples=2000, bins=30)
    first = slider.result
    assert isinstance(first, Figure) and first._suptitle.get_text() == "θ = 0°"
    target_at_0 = first.axes[0].images[0].get_array().copy()
    _control(slider, "θ (rad)").value = math.pi / 2
    second = slider.result
    assert second is not first and second._suptitle.get_text() == "θ = 90°"
    target_at_90 = second.axes[0].images[0].get_array()
    # the target turned by 90 degrees: the image transposed (grid symmetric about both axes)
    np.testing.assert_allclose(target_at_90, np.asarray(target_at_0).T, atol=1e-9)


def test_theta_slider_with_radius():
    model = AmortizedPlanarFlow(dim=2, flow_length=1, hidden=8, features="angle_radius")
    with pytest.raises(ValueError, match="radius"):
        widgets.theta_slider(model, ring_energy)
    slider = widgets.theta_slider(model, ring_energy, radius=2.0, num_samples=500, bins=20)
    _control(slider, "radius r").value = 3.0
    assert slider.result._suptitle.get_text() == "θ = 0°, r = 3.00"
