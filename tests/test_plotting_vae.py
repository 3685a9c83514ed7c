"""Part 3's figure functions (nfutils.plotting) and the latent slider (nfutils.widgets)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from nfutils import plotting, vae, widgets


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vae.VAE(latent_dim=2, flow_length=2, hidden=16).eval()


def test_plot_latent_codes_draws_every_point_with_its_digit_colour():
    fig = Figure()
    ax = fig.subplots()
    z = np.random.default_rng(0).normal(size=(50, 2))
    labels = np.arange(50) % 10
    points = plotting.plot_latent_codes(ax, z, labels, extent=3.0)
    np.testing.assert_array_equal(points.get_offsets(), z)
    np.testing.assert_array_equal(points.get_array(), labels)
    assert ax.get_xlim() == (-3.0, 3.0) and len(ax.get_legend().get_texts()) == 10
    # legend colours are the scatter's colours for the same digit
    scatter_colour = points.to_rgba(np.array([3]))[0]
    legend_colour = ax.get_legend().legend_handles[3].get_color()
    np.testing.assert_allclose(matplotlib.colors.to_rgba(legend_colour), scatter_colour)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plotting.plot_latent_codes(ax, z[:, :1], labels)


def test_decoded_manifold_tiles_are_the_decoder_means_at_the_right_points(model):
    image = plotting.decoded_manifold(model, num_per_side=3, extent=2.0)
    assert image.shape == (84, 84) and 0 <= image.min() and image.max() <= 1
    # the tile in row 0 (top), column 2 shows z = (z1 = 2, z2 = 2)
    with torch.no_grad():
        expected = torch.sigmoid(model.decode(torch.tensor([[2.0, 2.0]]))).reshape(28, 28)
    np.testing.assert_allclose(image[:28, 56:], expected.numpy(), atol=1e-6)
    with torch.no_grad():
        bottom_left = torch.sigmoid(model.decode(torch.tensor([[-2.0, -2.0]]))).reshape(28, 28)
    np.testing.assert_allclose(image[56:, :28], bottom_left.numpy(), atol=1e-6)


def test_posterior_comparison_figure_shows_kl_in_each_q_panel():
    x = torch.bernoulli(torch.full((1, 784), 0.2))
    torch.manual_seed(1)
    models = {"K = 0": vae.VAE(2, 0, hidden=8), "K = 2": vae.VAE(2, 2, hidden=8)}
    grids = {name: vae.grid_posterior(m, x, resolution=30, coarse_resolution=41) for name, m in models.items()}
    fig = plotting.posterior_comparison_figure(list(x), grids)
    assert len(fig.axes) == 5
    titles = [ax.get_title() for ax in fig.axes]
    for name, rows in grids.items():
        for grid in rows:
            assert any(f"{name}: q(z|x)\nKL = {grid.kl:.2f} nats" == t for t in titles)
    with pytest.raises(ValueError, match="one grid per image"):
        plotting.posterior_comparison_figure(list(x) * 2, grids)


def test_plot_learning_curves_mean_and_band():
    fig = Figure()
    ax = fig.subplots()
    values = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [2.0, 3.0, 7.0]])
    line = plotting.plot_learning_curves(ax, [1, 2, 3], values, "K = 0")
    np.testing.assert_allclose(line.get_ydata(), [2.0, 3.0, 5.0])
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == 1.0 and band[:, 1].max() == 7.0
    assert line.get_label() == "K = 0 (3 seeds)"
    with pytest.raises(ValueError, match=r"\(n_seeds, 2\)"):
        plotting.plot_learning_curves(ax, [1, 2], values, "bad")


def test_latent_decoder_figure_and_slider_redraw_the_decoded_digit(model):
    fig = plotting.latent_decoder_figure(model, 0.5, -1.0, extent=3.0)
    with torch.no_grad():
        expected = torch.sigmoid(model.decode(torch.tensor([[0.5, -1.0]]))).reshape(28, 28)
    np.testing.assert_allclose(fig.decoded, expected.numpy(), atol=1e-6)

    torch.manual_seed(2)
    other = vae.VAE(latent_dim=2, flow_length=0, hidden=16).eval()
    codes = {"A": (np.zeros((5, 2)), np.arange(5))}
    slider = widgets.latent_slider({"A": model, "B": other}, codes)
    first = slider.result
    assert isinstance(first, Figure) and first.axes[0].get_title() == "z = (0.00, 0.00)"
    assert len(first.axes[0].collections) == 1  # model A's codes are drawn
    controls = {c.description: c for c in slider.children if hasattr(c, "description")}
    controls["z1"].value = 1.5
    moved = slider.result
    assert moved.axes[0].get_title() == "z = (1.50, 0.00)"
    assert not np.allclose(moved.decoded, first.decoded)
    controls["model"].value = "B"
    with torch.no_grad():
        expected_b = torch.sigmoid(other.decode(torch.tensor([[1.5, 0.0]]))).reshape(28, 28)
    np.testing.assert_allclose(slider.result.decoded, expected_b.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="2-D latent"):
        plotting.latent_decoder_figure(vae.VAE(latent_dim=3, hidden=4), 0.0, 0.0)
