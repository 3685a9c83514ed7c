"""nfutils/plotting/images.py and Figure 4: tiling, reconstructions, the bound against K, the K slider."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from nfutils import plotting, widgets


def test_tile_images_places_each_image_in_its_tile():
    images = np.stack([np.full(784, i / 10) for i in range(7)])
    tiled = plotting.tile_images(images, num_columns=3)
    assert tiled.shape == (3 * 28, 3 * 28)
    for i in range(7):
        row, col = divmod(i, 3)
        assert np.all(tiled[row * 28:(row + 1) * 28, col * 28:(col + 1) * 28] == i / 10)
    assert np.all(tiled[2 * 28:, 28:] == 0)  # empty tiles of the last row
    # one tile keeps the image's row-major layout
    ramp = np.arange(784, dtype=float)[None] / 784
    assert np.array_equal(plotting.tile_images(ramp, 1), ramp.reshape(28, 28))
    with pytest.raises(ValueError, match=r"\(n, 784\)"):
        plotting.tile_images(np.zeros((2, 100)), 2)


def test_reconstructions_figure_and_figure4():
    rng = np.random.default_rng(0)
    originals, recon = rng.random((5, 784)), rng.random((5, 784))
    fig = plotting.reconstructions_figure(originals, recon, title="K = 2")
    assert isinstance(fig, Figure) and np.array_equal(fig.reconstructions, recon)
    with pytest.raises(ValueError, match="same shape"):
        plotting.reconstructions_figure(originals, recon[:3])
    fig = Figure()
    ax = fig.subplots()
    plotting.plot_bound_against_flow_length(ax, [0, 10], [90.0, 88.0], [95.0, 92.0],
                                            paper={0: 89.9, 10: 87.5})
    lines = ax.get_lines()
    assert len(lines) == 3
    assert list(lines[1].get_ydata()) == [90.0, 88.0]


def test_flow_length_slider_redraws_for_each_K():
    rng = np.random.default_rng(1)
    originals = rng.random((4, 784))
    recon = {0: rng.random((4, 784)), 80: rng.random((4, 784))}
    widget = widgets.flow_length_slider(originals, recon)
    control = widget.children[0]
    assert control.value == 80
    assert np.array_equal(widget.result.reconstructions, recon[80])
    control.value = 0
    assert np.array_equal(widget.result.reconstructions, recon[0])
    with pytest.raises(ValueError, match="empty"):
        widgets.flow_length_slider(originals, {})
