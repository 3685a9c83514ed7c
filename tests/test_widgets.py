"""Widgets: each builder's callback redraws when a control changes."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from nfutils import widgets


def _control(widget, description):
    return next(c for c in widget.children if getattr(c, "description", None) == description)


def test_planar_layer_explorer_redraws_on_slider_change():
    explorer = widgets.planar_layer_explorer(w=(1.0, 0.0), u=(1.0, 0.0), resolution=20)
    first = explorer.result
    assert isinstance(first, Figure)
    assert "w.u = 1.00" in first._suptitle.get_text()
    _control(explorer, "u1").value = -2.0
    second = explorer.result
    assert second is not first
    assert "w.u = -2.00" in second._suptitle.get_text()
    assert "NOT invertible" in second._suptitle.get_text()
    _control(explorer, "u_hat (App. A.1)").value = True
    assert "w.u_hat" in explorer.result._suptitle.get_text()
    assert "(invertible)" in explorer.result._suptitle.get_text()


def test_layer_slider_shows_layer_k_of_the_chosen_potential():
    rng = np.random.default_rng(0)
    layers = {"U1": [rng.normal(size=(30, 2)) for _ in range(4)],
              "U2": [rng.normal(size=(30, 2)) for _ in range(6)]}
    colours = {"U1": rng.random(30), "U2": rng.random(30)}
    slider = widgets.layer_slider(layers, colours)
    offsets = lambda: slider.result.axes[0].collections[0].get_offsets()  # noqa: E731
    k = _control(slider, "layer k")
    assert (k.value, k.max) == (3, 3)  # the first flow's K: every position of the slider draws a layer
    np.testing.assert_array_equal(offsets(), layers["U1"][3])
    k.value = 1
    np.testing.assert_array_equal(offsets(), layers["U1"][1])
    _control(slider, "potential").value = "U2"
    assert (k.value, k.max) == (5, 5)  # the slider follows the chosen flow's K
    np.testing.assert_array_equal(offsets(), layers["U2"][5])
    k.value = 1
    assert slider.result.axes[0].get_title().startswith("U2: samples after layer 1 of 5")
    np.testing.assert_array_equal(slider.result.axes[0].collections[0].get_array(), colours["U2"])
    _control(slider, "potential").value = "U1"
    assert (k.value, k.max) == (3, 3)


def test_layer_slider_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same keys"):
        widgets.layer_slider({"U1": [np.zeros((2, 2))]}, {"U2": np.zeros(2)})
    with pytest.raises(ValueError, match="empty"):
        widgets.layer_slider({}, {})
