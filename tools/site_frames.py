"""The frames of the website's sliders, drawn from the committed fits by the series' own widgets.

No kernel runs behind a web page, so each interactive figure of the notebooks is precomputed: for
every position of its control, the widget of ``nfutils.widgets`` that the notebook shows is built
from the same committed fits, its control is set to that position, and the figure the widget then
draws (``widget.result``, made by the pure plotting function the widget wraps) is saved as a PNG.
A frame is therefore exactly what the live slider shows at that value. Nothing is trained here:
every model is read from ``data/checkpoints/`` (a missing file skips its slider with a note).

Each slider builder returns a ``SliderSet`` (one or more sliders, a reader picks one when there are
several); ``tools/site_sliders.py`` turns it into the HTML of the page.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "data" / "checkpoints"
# Part 1's fits (format: the notebook's load-or-compute file); PART1_FITS in the environment
# points the build at another file of the same format (e.g. short fits made for a test).
PART1_FITS_DEFAULT = CHECKPOINTS / "part1_fits.pt"
FRAME_DPI = 60            # a frame is a screen image: modest dpi keeps a page within 8 MB
PALETTE_COLOURS = 128     # frames are stored as palette PNGs (a quarter of the RGBA size)


@dataclass(frozen=True)
class Frame:
    """One position of a control: its value as the readout shows it, and the PNG drawn there."""
    value: str
    png: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.png).hexdigest()


@dataclass
class Slider:
    """Frames over one or two controls: ``frames[(i,)]`` or ``frames[(i, j)]`` is the frame at
    position i of the first control (and j of the second)."""
    key: str                                   # e.g. "U1": unique within its SliderSet
    label: str                                 # what the chooser shows, e.g. "U1 (K = 32)"
    controls: list[tuple[str, list[str]]]      # (control's name, the values along it)
    start: tuple[int, ...]                     # the position shown first
    frames: dict[tuple[int, ...], Frame] = field(default_factory=dict)


@dataclass
class SliderSet:
    """The website's counterpart of one widget cell of a notebook."""
    widget: str              # its key in BUILDERS: the nfutils.widgets function the cell calls
    title: str               # one line above the figure
    sliders: list[Slider]
    note: str = ""           # what the frames were drawn from


# --------------------------------------------------------------------------- drawing one frame


def png_of(figure: Figure, dpi: int = FRAME_DPI) -> bytes:
    """The figure as a palette PNG (``PALETTE_COLOURS`` colours), the bytes a page embeds."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    image = Image.open(buffer).convert("RGB").quantize(colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def controls_of(widget) -> dict:
    """An ``ipywidgets.interactive``'s controls by argument name (``k``, ``theta``, ...)."""
    return {control._kwarg: control for control in widget.kwargs_widgets if hasattr(control, "_kwarg")}


@contextlib.contextmanager
def quiet():
    """The widgets ``display`` their figures; with no notebook to show them in, ``display``
    prints them, and that text is discarded."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def drawn_at(widget, **values) -> Figure:
    """The figure ``widget`` draws with its controls set to ``values``: the controls are set
    with the redraw held, then the widget redraws once (``interactive.update``, what a change of
    a control calls); ``widget.result`` is that figure."""
    controls = controls_of(widget)
    for control in controls.values():
        control.unobserve(widget.update, names="value")
    try:
        for name, value in values.items():
            controls[name].value = value
    finally:
        for control in controls.values():
            control.observe(widget.update, names="value")
    with quiet():
        widget.update()
    return widget.result


def slide(widget, key: str, label: str, control: str, readouts: Sequence[str],
          settings: Sequence[dict], start: int) -> Slider:
    """A one-control slider: frame i is the widget's figure with its controls set to
    ``settings[i]`` (readout ``readouts[i]``)."""
    slider = Slider(key, label, [(control, list(readouts))], (start,))
    for index, (readout, values) in enumerate(zip(readouts, settings)):
        slider.frames[(index,)] = Frame(readout, png_of(drawn_at(widget, **values)))
    return slider


def missing(path: Path, what: str) -> str | None:
    """A note when a committed file is absent (the slider is then skipped), else None."""
    return None if path.is_file() else f"{path.relative_to(ROOT) if ROOT in path.parents else path} is missing: {what}"


# --------------------------------------------------------------------------- Part 1: 2-D flows


def planar_layer_explorer() -> SliderSet:
    """One planar layer as Part 1's explorer starts it (w = (1, 1), u = (1.5, 0), b = 0): the
    offset b over the explorer's range, and the direction of u (|u| = 1.5) around the circle,
    where the layer stops being invertible once w^T u < -1 (App. A.1)."""
    from nfutils import widgets

    with quiet():
        explorer = widgets.planar_layer_explorer(w=(1.0, 1.0), u=(1.5, 0.0), b=0.0)
    offsets = [round(float(b), 2) for b in np.arange(-3.0, 3.01, 0.5)]
    by_offset = slide(explorer, "b", "the offset b (u = (1.5, 0))", "b", [f"{b:+.1f}" for b in offsets],
                      [dict(u1=1.5, u2=0.0, b=b) for b in offsets], offsets.index(0.0))
    angles = list(range(0, 360, 15))
    directions = [dict(b=0.0, u1=round(1.5 * math.cos(math.radians(a)), 6),
                       u2=round(1.5 * math.sin(math.radians(a)), 6)) for a in angles]
    by_direction = slide(explorer, "u", "the direction of u (|u| = 1.5, b = 0)", "angle of u",
                         [f"{a}°" for a in angles], directions, 0)
    return SliderSet("planar_layer_explorer", "One planar layer f(z) = z + u tanh(wᵀz + b), w = (1, 1)",
                     [by_offset, by_direction], "drawn by widgets.planar_layer_explorer")


# Part 1's main fits: planar flows of these lengths, run_seed 0 (the notebook's layer slider)
MAIN_FLOW_LENGTHS = {"U1": 32, "U2": 32, "U3": 32, "U4": 32, "U8": 100}


def load_part1_flows(path: Path) -> dict[str, tuple[int, torch.nn.Module, int]]:
    """Part 1's main fits (``MAIN_FLOW_LENGTHS``, planar, run_seed 0; of several, the longest
    run) from the notebook's fits file: potential -> (K, model, steps)."""
    from nfutils import checkpoints, flows

    state = checkpoints.load_checkpoint(path, required=("fits",))
    main = {}
    for entry in state["fits"]:
        potential, flow_length = entry["potential"], entry["flow_length"]
        if (entry["kind"], entry["run_seed"], MAIN_FLOW_LENGTHS.get(potential)) != ("planar", 0, flow_length):
            continue
        if potential in main and main[potential][2] >= entry["steps"]:
            continue
        model = flows.NormalizingFlow(2, flows.PlanarFlow(2, flow_length, init_scale=0.01))
        model.load_state_dict(entry["state_dict"])
        main[potential] = (flow_length, model.eval(), entry["steps"])
    return main


def layer_slider(path: Path | None = None) -> SliderSet | str:
    """Every layer k = 0 ... K of each potential's main flow, as Part 1's layer slider shows it:
    3,000 samples (generator seed 3) coloured by the distance of z_0 to the base mean."""
    from nfutils import widgets

    path = Path(path or os.environ.get("PART1_FITS") or PART1_FITS_DEFAULT)
    note = missing(path, "Part 1's layer slider keeps its still image")
    if note:
        return note
    fits = load_part1_flows(path)
    names = sorted(fits, key=lambda name: int(name[1:]))
    layers, colours = {}, {}
    for name in names:
        _, model, _ = fits[name]
        z = model.sample_layers(3000, generator=torch.Generator().manual_seed(3))
        layers[name] = [layer.numpy() for layer in z]
        colours[name] = (z[0] - model.mu.detach()).norm(dim=-1).numpy()
    extent = 4.5 if "U8" in names else 4.0  # Part 1's EXTENT: the largest half-width shown
    with quiet():
        slider_widget = widgets.layer_slider(layers, colours, extent=extent)
    sliders = []
    for name in names:
        flow_length, _, steps = fits[name]
        drawn_at(slider_widget, potential=name)  # the widget's k slider now spans 0 ... K of this flow
        sliders.append(slide(slider_widget, name, f"{name} (K = {flow_length}, {steps:,} steps)", "layer k",
                             [str(k) for k in range(flow_length + 1)],
                             [dict(potential=name, k=k) for k in range(flow_length + 1)], flow_length))
    return SliderSet("layer_slider", "Samples of each trained flow after layer k",
                     sliders, f"drawn by widgets.layer_slider from {path.name}")


# --------------------------------------------------------------------------- Part 2: amortized flows


def amortizer_theta_slider(path: Path, what: str, **settings):
    """``widgets.theta_slider`` of the committed amortizer at ``path`` with the notebook's
    ``settings``, or a note saying that ``what`` keeps its still image when the file is absent."""
    from nfutils import amortized, widgets

    note = missing(path, f"{what} keeps its still image")
    if note:
        return note
    model, _ = amortized.load_amortized(path)
    with quiet():
        return widgets.theta_slider(model, amortized.ring_energy, num_samples=50_000, **settings)


def theta_slider(num_angles: int = 36) -> SliderSet | str:
    """Part 2's θ slider over ``num_angles`` angles in [-180°, 180°), from the committed
    amortizer, with the notebook's settings (50,000 samples, 100 bins, seed 0)."""
    path = CHECKPOINTS / "part2_amortizer_full.pt"
    slider_widget = amortizer_theta_slider(path, "Part 2's θ slider", extent=4.0, bins=100, seed=0)
    if isinstance(slider_widget, str):
        return slider_widget
    degrees = [-180 + 360 * i // num_angles for i in range(num_angles)]
    slider = slide(slider_widget, "theta", "θ", "θ", [f"{d}°" for d in degrees],
                   [dict(theta=math.radians(d)) for d in degrees], degrees.index(0))
    return SliderSet("theta_slider", "The amortized flow q(z | θ) and its target p(z | θ)", [slider],
                     f"drawn by widgets.theta_slider from {path.name}")


def theta_radius_slider(num_angles: int = 12) -> SliderSet | str:
    """Part 2's slider of the (θ, r) amortizer: ``num_angles`` angles in [-180°, 180°) times the
    ring radii of the notebook (training radii 1.5-3.0 and the unseen 1.25-3.25 between and
    beyond them), from the committed amortizer, with the notebook's settings (50,000 samples,
    90 bins on [-5, 5]^2, seed 0)."""
    path = CHECKPOINTS / "part2_radius_amortizer_full.pt"
    slider_widget = amortizer_theta_slider(path, "Part 2's (θ, r) slider", radius=2.25, extent=5.0,
                                           bins=90)
    if isinstance(slider_widget, str):
        return slider_widget
    degrees = [-180 + 360 * i // num_angles for i in range(num_angles)]
    radii = [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25]
    slider = Slider("theta_radius", "(θ, r)", [("θ", [f"{d}°" for d in degrees]),
                                               ("r", [f"{r:.2f}" for r in radii])],
                    (degrees.index(0), radii.index(2.25)))
    for i, d in enumerate(degrees):
        for j, r in enumerate(radii):
            figure = drawn_at(slider_widget, theta=math.radians(d), radius=r)
            slider.frames[(i, j)] = Frame(f"θ = {d}°, r = {r:.2f}", png_of(figure))
    return SliderSet("theta_radius_slider", "The (θ, r) amortizer q(z | θ, r) and its target, on "
                     "radii seen in training (1.5-3.0) and between and beyond them", [slider],
                     f"drawn by widgets.theta_slider(..., radius=) from {path.name}")


# --------------------------------------------------------------------------- Part 3: VAE, 2-D latent


def posterior_means(model, images: torch.Tensor, num_samples: int = 32, batch: int = 1000) -> torch.Tensor:
    """Codes of ``images`` as Part 3 computes them: the encoder's mean for K = 0, the mean of 32
    flow samples otherwise (a generator seeded 0 for each batch of 1,000)."""
    means = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            x = images[start:start + batch]
            if model.flow_length == 0:
                means.append(model.encode(x)[0])
            else:
                z_k, _ = model.posterior_sample(x, num_samples, generator=torch.Generator().manual_seed(0))
                means.append(z_k.mean(0))
    return torch.cat(means)


def latent_slider(side: int = 9, extent: float = 3.0, num_codes: int = 3000) -> SliderSet | str:
    """Part 3's latent slider: the decoded digit at a ``side`` x ``side`` lattice of latent
    points (z1, z2) in [-extent, extent]^2, for each committed model, over the codes of the first
    ``num_codes`` test digits."""
    from nfutils import data, vae_training, widgets

    paths = sorted(CHECKPOINTS.glob("vae2d_K*.pt"), key=lambda p: int(p.stem.split("K")[1]))
    if not paths:
        return f"{CHECKPOINTS.relative_to(ROOT)}/vae2d_K*.pt is missing: Part 3's latent slider keeps its still image"
    images, labels = data.binarized_test_set()
    images, labels = images[:num_codes], labels[:num_codes]
    models = {f"K = {int(p.stem.split('K')[1])}": vae_training.load_vae(p)[0] for p in paths}
    codes = {name: (posterior_means(model, images), labels) for name, model in models.items()}
    with quiet():
        slider_widget = widgets.latent_slider(models, codes, extent=extent)
    ticks = [round(float(t), 2) for t in np.linspace(-extent, extent, side)]
    readouts = [f"{t:+.2f}" for t in ticks]
    centre = side // 2
    sliders = []
    for name in models:
        slider = Slider(name.replace(" ", ""), name, [("z1", readouts), ("z2", readouts)], (centre, centre))
        for i, z1 in enumerate(ticks):
            for j, z2 in enumerate(ticks):
                figure = drawn_at(slider_widget, model=name, z1=z1, z2=z2)
                slider.frames[(i, j)] = Frame(f"({readouts[i]}, {readouts[j]})", png_of(figure))
        sliders.append(slider)
    return SliderSet("latent_slider", "The decoder's mean image at a point z of the latent plane", sliders,
                     f"drawn by widgets.latent_slider from {', '.join(p.name for p in paths)}")


# --------------------------------------------------------------------------- Part 4: VAE, 40-D latent


def flow_length_slider(num_digits: int = 10, seed: int = 0) -> SliderSet | str:
    """Part 4's flow-length slider: the first test digit of each class and its reconstruction
    E[x | z_K], z_K ~ q_K(z | x) (one sample, generator seed 0), by each committed model."""
    from nfutils import data, vae_training, widgets

    paths = sorted(CHECKPOINTS.glob("mnist40_K*.pt"), key=lambda p: int(p.stem.split("K")[1]))
    if not paths:
        return f"{CHECKPOINTS.relative_to(ROOT)}/mnist40_K*.pt is missing: Part 4's slider keeps its still image"
    images, labels = data.binarized_test_set()
    picks = torch.cat([torch.nonzero(labels == digit)[:1, 0] for digit in range(num_digits)])
    originals = images[picks]
    reconstructions = {}
    for path in paths:
        model, _ = vae_training.load_vae(path)
        with torch.no_grad():
            z_k, _ = model.posterior_sample(originals, 1, torch.Generator().manual_seed(seed))
            reconstructions[model.flow_length] = torch.sigmoid(model.decode(z_k[0])).numpy()
    with quiet():
        slider_widget = widgets.flow_length_slider(originals.numpy(), reconstructions)
    flow_lengths = sorted(reconstructions)
    slider = slide(slider_widget, "K", "K", "flow length K", [str(k) for k in flow_lengths],
                   [dict(flow_length=k) for k in flow_lengths], len(flow_lengths) - 1)
    return SliderSet("flow_length_slider", "The same test digits reconstructed by the model of each flow length",
                     [slider], f"drawn by widgets.flow_length_slider from {', '.join(p.name for p in paths)}")


def calls(source: str, widget: str) -> bool:
    """Whether a notebook cell's source calls the widget whose frames ``BUILDERS[widget]``
    draws: ``widgets.<widget>(``, except ``theta_radius_slider``, which is
    ``widgets.theta_slider(`` called with ``radius=`` (the (θ, r) amortizer's slider)."""
    if widget == "theta_radius_slider":
        return "widgets.theta_slider(" in source and "radius=" in source
    if f"widgets.{widget}(" not in source:
        return False
    return not (widget == "theta_slider" and "radius=" in source)


def one_thread() -> None:
    """Each drawing process uses one torch thread (the build runs two processes on two cores)."""
    torch.set_num_threads(1)


def build(widget: str) -> tuple[SliderSet | str, float]:
    """(the slider set of ``widget`` or a note saying why it has none, CPU seconds it took)."""
    start = time.process_time()
    return BUILDERS[widget](), time.process_time() - start


# Heaviest first (CPU seconds on one core: about 22, 11, 10, 9, 3, 1), so that the build's two
# drawing processes finish at about the same time.
BUILDERS: dict[str, Callable[[], SliderSet | str]] = {
    "latent_slider": latent_slider,
    "layer_slider": layer_slider,
    "planar_layer_explorer": planar_layer_explorer,
    "theta_radius_slider": theta_radius_slider,
    "theta_slider": theta_slider,
    "flow_length_slider": flow_length_slider,
}
