"""Training loops of the series.

* ``fit_flow``: fit a ``NormalizingFlow`` to an unnormalized 2-D target exp(-U) by
  minimizing the free energy of Eq. (15) (Parts 1 and 2).
* ``fit_vae``: train a ``vae.VAE`` on dynamically binarized MNIST (Eq. 20, annealed as in
  Sec. 6.2), with atomic checkpoints, resume, time budgets (Parts 3 and 4); ``save_vae`` /
  ``load_vae`` / ``load_checkpoint`` for the files under ``data/checkpoints/``.

Every loop stops with ``NonFiniteLossError`` on a NaN or infinite loss instead of training on
it: the message says at which step and what to try.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .data import batches, binarize
from .flows import NormalizingFlow, annealed_beta, free_energy
from .vae import VAE, bound, build_vae, complete_config

__all__ = ["NonFiniteLossError", "FitHistory", "fit_flow", "kl_estimate"]


class NonFiniteLossError(RuntimeError):
    """Raised when a loss is NaN or infinite; training stops rather than continue on it."""


def _check_positive(**counts: int) -> None:
    """Raise ``ValueError`` naming the first count that is not an integer >= 1."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_finite_loss(loss: Tensor, step: int) -> None:
    """Raise ``NonFiniteLossError`` when ``loss`` is not finite."""
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLossError(
            f"loss became {float(loss.detach())} at step {step}; training stopped (parameters are those "
            "of the last finite step). Lower the learning rate, anneal the target (anneal=True) "
            "or clip gradients."
        )


@dataclass
class FitHistory:
    """What ``fit_flow`` records: steps, free energies F (Eq. 15, at beta = 1) and, when log Z
    is known, KL(q || p) = F + log Z in nats; plus the wall time in seconds."""

    steps: list[int] = field(default_factory=list)
    free_energy: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    seconds: float = 0.0


def kl_estimate(model: NormalizingFlow, U: Callable[[Tensor], Tensor], log_Z: float,
                num_samples: int = 10_000, generator: torch.Generator | None = None) -> float:
    """Monte-Carlo KL(q_K || p) = E_q[log q_K + U] + log Z in nats (Eq. 15 plus quadrature)."""
    with torch.no_grad():
        z_k, log_q = model.rsample(num_samples, generator=generator)
        return float(free_energy(log_q, U(z_k))) + log_Z


def fit_flow(
    model: NormalizingFlow,
    U: Callable[[Tensor], Tensor],
    num_steps: int = 10_000,
    num_samples: int = 1000,
    lr: float = 2e-3,
    anneal: bool = False,
    log_Z: float | None = None,
    log_every: int = 100,
    progress: bool = False,
    generator: torch.Generator | None = None,
    anneal_steps: int = 10_000,
) -> FitHistory:
    """Minimize the free energy F = E_q[log q_K(z_K) + beta_t U(z_K)] (Eq. 15) with Adam.

    Args:
        model: the flow q_K (its parameters are trained in place).
        U: the target's energy, (n, 2) -> (n,).
        num_steps: Adam steps. num_samples: samples per step. lr: learning rate.
        anneal: use the paper's beta_t = min(1, 0.01 + t / anneal_steps); otherwise beta = 1.
        log_Z: log of the target's normalizer (``potentials.log_partition``); when given, the
            history holds KL(q || p) in nats.
        log_every: record F (at beta = 1, on the step's own samples) every this many steps.
        progress: show a tqdm bar.
        generator: random numbers of the base samples (reproducible runs).
        anneal_steps: T of the annealing schedule (the paper's 10,000); beta = 1 from step T on.

    Returns:
        ``FitHistory``.

    Raises:
        NonFiniteLossError: if the loss is not finite at some step.
        ValueError: if a count is below 1 or lr is not positive.
    """
    _check_positive(num_steps=num_steps, num_samples=num_samples, log_every=log_every,
                    anneal_steps=anneal_steps)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    optimizer = make_optimizer(model.parameters(), "adam", lr)  # fused where available
    history = FitHistory()
    steps = range(num_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="fit", leave=False)
    start = time.perf_counter()
    for step in steps:
        z_k, log_q = model.rsample(num_samples, generator=generator)
        energies = U(z_k)
        beta = annealed_beta(step, num_steps=anneal_steps) if anneal else 1.0
        loss = free_energy(log_q, energies, beta)
        check_finite_loss(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % log_every == 0 or step == num_steps - 1:
            with torch.no_grad():
                value = float((log_q + energies).mean()) if beta != 1.0 else float(loss)
            history.steps.append(step)
            history.free_energy.append(value)
            if log_Z is not None:
                history.kl.append(value + log_Z)
    history.seconds = time.perf_counter() - start
    return history


# =========================================================================== VAE (Parts 3-4)
#
# ``fit_vae`` trains a ``nfutils.vae.VAE`` on dynamically binarized MNIST by minimizing the
# annealed free energy of Sec. 6.2 (Eq. 20 with beta_t on log p(x, z_K)). It checkpoints every
# N steps (atomically), resumes from its last checkpoint, stops cleanly after a time budget (so a
# long run can be cut into pieces shorter than 10 minutes) and never trains on a NaN.

CHECKPOINT_FORMAT = "nfutils.vae/1"

__all__ += [
    "check_finite_loss",
    "CheckpointError",
    "VAEHistory",
    "make_optimizer",
    "warmup_cosine",
    "evaluate_elbo",
    "fit_vae",
    "save_checkpoint",
    "load_checkpoint",
    "save_vae",
    "load_vae",
]


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read (truncated, corrupt, or not a checkpoint)."""


@dataclass
class VAEHistory:
    """What ``fit_vae`` records (all bounds in nats, at beta = 1).

    Attributes:
        steps, train_elbo: every ``log_every`` steps, the mean ELBO of the training minibatches
            since the previous record (the "running bound" of the progress bar).
        epochs, epoch_train_elbo, test_elbo: per completed epoch, the mean minibatch ELBO over
            the epoch and the ELBO of the fixed binarized test set (NaN without a test set).
        seconds: training wall time, summed over resumed pieces.
        resumed_from: the global steps at which this run resumed from a checkpoint.
        setting_changes: settings changed on a resume, as dicts
            {"step", "name", "old", "new"} (e.g. a lower ``lr`` after a NaN stop).
        finished: True when all epochs ran (False after a time-budget stop).
        epoch_max_grad_norm, epoch_clipped_steps: per completed epoch, with gradient clipping
            on, the largest gradient norm before clipping and the number of steps it clipped
            (empty without clipping).
    """

    steps: list[int] = field(default_factory=list)
    train_elbo: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    epoch_train_elbo: list[float] = field(default_factory=list)
    test_elbo: list[float] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: list[int] = field(default_factory=list)
    setting_changes: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    epoch_max_grad_norm: list[float] = field(default_factory=list)
    epoch_clipped_steps: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "VAEHistory":
        return cls(**{name: values[name] for name in cls.__dataclass_fields__ if name in values})


def make_optimizer(params, name: str = "adam", lr: float = 1e-3,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """Adam (fused kernel where the device supports it) or RMSprop with momentum.

    Fused Adam updates all parameters in one kernel instead of tensor by tensor, which saves a
    large share of a VAE step's time on the CPU (benchmarks/vae.py). The paper trained with
    RMSprop with momentum (Sec. 6.2); ``name="rmsprop"`` gives it.

    Args:
        params: parameters to optimize. name: "adam" or "rmsprop". lr: learning rate.
        momentum: RMSprop's momentum (ignored by Adam).
    """
    params = list(params)
    if name == "adam":
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # fused kernel not available here
            return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {name!r}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Learning-rate multiplier: a linear warm-up from ~0 to 1 over ``warmup_steps``, then a
    cosine decay to 0 at ``total_steps``.

        m(t) = (t + 1) / T_w                                      for t < T_w,
        m(t) = (1 + cos(pi (t - T_w) / (T - T_w))) / 2            for T_w <= t < T,
        m(t) = 0                                                  for t >= T.

    The warm-up keeps Adam's first updates small while its second-moment estimates are still
    noisy; the decay to zero lets the last epochs settle into a minimum instead of bouncing
    around it at a constant step size.

    Args:
        step: t, the global step about to be taken (from 0).
        total_steps: T, the step at which the multiplier reaches 0.
        warmup_steps: T_w (0: no warm-up).
    """
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need total_steps >= 1 and 0 <= warmup_steps < total_steps; got "
                         f"{total_steps} and {warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return 0.0
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate_elbo(model: VAE, images: Tensor, num_samples: int = 1, batch: int = 1000,
                  seed: int = 0) -> float:
    """Mean ELBO (Eq. 20, beta = 1) of ``images`` in nats, with its own seeded generator (the
    same noise for every call, and the training generator is left untouched)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    total = 0.0
    for start in range(0, images.shape[0], batch):
        x = images[start : start + batch].to(device)
        total += float(bound(model, x, num_samples, generator=generator).elbo.sum())
    return total / images.shape[0]


# --------------------------------------------------------------------------- checkpoints


def state_checksum(state: dict[str, Any]) -> str:
    """SHA-256 of everything in a checkpoint dict except its ``"checksum"`` entry: the bytes,
    dtype and shape of every tensor and the repr of every other value, in the dict's order.

    ``torch.load`` does not notice a changed byte inside a tensor's data; this does.
    """
    digest = hashlib.sha256()

    def visit(value: Any) -> None:
        if isinstance(value, Tensor):
            flat = value.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"T{flat.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key, item in value.items():
                visit(key)
                visit(item)
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                visit(item)
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    visit({key: value for key, value in state.items() if key != "checksum"})
    return digest.hexdigest()


def _check_writable(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` now, not at the first checkpoint, if ``path`` cannot be written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".probe"):
            pass
    except OSError as error:
        raise ValueError(
            f"checkpoint_path {path} is not writable ({type(error).__name__}: {error}); "
            "expected a file path in a folder that can be created and written"
        ) from None
    if path.is_dir():
        raise ValueError(f"checkpoint_path {path} is a folder; expected a file path")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` with ``torch.save`` atomically: to a temp file in the same folder,
    flushed to disk, then ``os.replace`` onto ``path`` (a crash mid-write never leaves a
    truncated checkpoint). A ``"checksum"`` entry (``state_checksum``) is added, which
    ``load_checkpoint`` verifies. Temp files left by earlier writers of ``path`` that were
    killed mid-write are removed (one process writes a given path at a time)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, "checksum": state_checksum(state)}
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp's 0600 -> the usual mode of a new file
        with os.fdopen(handle, "wb") as tmp:
            torch.save(state, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    for stale in path.parent.glob(glob.escape(path.name) + ".*.partial"):
        try:
            stale.unlink()
        except OSError:
            pass


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ("model", "config")) -> dict[str, Any]:
    """Open a checkpoint with ``torch.load(..., weights_only=True)`` (no code is unpickled) and
    verify its ``"checksum"`` (files written before checksums existed have none and load as
    they are).

    Args:
        path: the file. map_location: device of the loaded tensors.
        required: keys the checkpoint must have (a VAE's: "model" and "config").

    Raises:
        FileNotFoundError: no file at ``path`` (the message says how to make one).
        ValueError: ``map_location`` names a device this machine does not have.
        CheckpointError: the file is truncated, corrupt (checksum mismatch) or not a dict
            checkpoint with the ``required`` keys.
    """
    device = torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"map_location={str(map_location)!r} but no CUDA device is available here; "
            "expected map_location='cpu' (or a device this machine has)"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path}. Train the model to create it (the notebooks do this "
            "when retrain=True or the file is missing), or restore the committed file with "
            f"`git checkout -- {path.name}` in its folder."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle means a bad file
        raise CheckpointError(
            f"checkpoint {path} could not be read ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). The file is truncated or "
            "corrupt: delete it and retrain, or restore it from git."
        ) from error
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise CheckpointError(
            f"checkpoint {path} is not an nfutils checkpoint of this kind (expected a dict "
            f"with keys {list(required)}; found {type(state).__name__}"
            + (f" with keys {sorted(state)}" if isinstance(state, dict) else "") + ")"
        )
    if "checksum" in state and state["checksum"] != state_checksum(state):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: the checksum of its contents does not match the "
            "one stored when it was written. Delete it and retrain, or restore it from git."
        )
    return state


def save_vae(model: VAE, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
             **extra: Any) -> None:
    """Save a model's weights only (no optimizer), in ``dtype``, with its config and ``extra``
    entries (e.g. ``history=history.as_dict()``, budgets): the small files committed under
    ``data/checkpoints/``. Written atomically; read back with ``load_vae``."""
    weights = {name: tensor.detach().to("cpu", dtype) for name, tensor in model.state_dict().items()}
    save_checkpoint({"format": CHECKPOINT_FORMAT, "config": dict(model.config),
                     "model": weights, **extra}, path)


def load_vae(path: str | os.PathLike, device: str | torch.device | None = None
             ) -> tuple[VAE, dict[str, Any]]:
    """Rebuild a ``VAE`` from a checkpoint of ``save_vae`` or ``fit_vae`` (float32 weights).

    Returns:
        (model, checkpoint dict) with the model in eval mode on ``device`` (default CPU).
    """
    state = load_checkpoint(path)
    model = build_vae(state["config"])
    weights = {name: tensor.float() for name, tensor in state["model"].items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not match its config: {error}") from error
    return model.to(device or "cpu").eval(), state


# --------------------------------------------------------------------------- the loop


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffle of epoch ``epoch`` depends on (seed, epoch) only, so a resumed run can
    replay the rest of an interrupted epoch in the same order."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def fit_vae(
    model: VAE,
    train_images: Tensor,
    test_images: Tensor | None = None,
    num_epochs: int = 10,
    batch_size: int = 100,
    num_samples: int = 1,
    lr: float = 1e-3,
    optimizer: str = "adam",
    anneal: bool = True,
    anneal_steps: int = 10_000,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    time_budget: float | None = None,
    seed: int = 0,
    eval_samples: int = 1,
    log_every: int = 100,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
    lr_schedule: Callable[[int], float] | None = None,
    max_grad_norm: float | None = None,
) -> VAEHistory:
    """Train a VAE by minimizing the annealed free energy (Eq. 20; Sec. 6.2) on binarized data.

    Each step: a minibatch of grey-level images is binarized afresh (x ~ Bernoulli(image),
    dynamic binarization), S = ``num_samples`` posterior samples per x give the loss
    E[log q_K(z_K|x) - beta_t (log p(x|z_K) + log p(z_K))] with
    beta_t = min(1, 0.01 + t / anneal_steps) (or 1 when ``anneal`` is False), one optimizer step.

    Randomness: the shuffle of epoch e comes from a generator seeded by (seed, e); the
    binarization and the posterior noise come from one generator on the model's device whose
    state is checkpointed. Evaluation uses its own generator. So a run resumed from a checkpoint
    takes exactly the steps an uninterrupted run takes (bit-identical on a deterministic CPU).

    Args:
        model: the VAE, trained in place on its current device.
        train_images: (N, D) grey levels in [0, 1] (e.g. ``data.load_mnist("train")[0]``).
        test_images: (M, D) fixed binary images (``data.binarized_test_set()[0]``), evaluated
            after every epoch; None skips evaluation.
        num_epochs: total epochs (counting those done before a resume).
        batch_size: images per step (the paper: 100). num_samples: S per x.
        lr, optimizer: see ``make_optimizer`` ("adam", fused where possible, or "rmsprop").
        anneal, anneal_steps: the beta_t schedule.
        checkpoint_path: where to keep the training state (model, optimizer, generator, step,
            epoch, history); if the file exists, training resumes from it. A resume must use
            the same ``seed``, ``optimizer`` and ``batch_size`` (they fix which steps are
            taken); a changed ``lr``, ``num_samples``, ``anneal`` or ``anneal_steps`` applies
            from the resumed step on (the optimizer's stored lr is replaced) and is recorded
            in ``history.setting_changes``.
        checkpoint_every: steps between checkpoints (one is also written at the end and when
            the time budget runs out).
        time_budget: stop cleanly (with a checkpoint) after this many seconds; call again to
            continue.
        seed: seed of all training randomness.
        eval_samples: S of the per-epoch test ELBO.
        log_every: steps between entries of ``history.train_elbo``.
        progress: show a tqdm bar with the running bound.
        callback: called as ``callback(step, elbo)`` after every step (``step`` counts the steps
            done), e.g. to stop a notebook run early by raising.
        lr_schedule: optional multiplier of ``lr`` as a function of the global step t (the
            step about to be taken, from 0), e.g. a warm-up and cosine decay; a function of t
            alone, so a resumed run follows the same schedule.
        max_grad_norm: clip the gradients' global norm to this value (None: no clipping).

    Returns:
        ``VAEHistory`` (also stored in the checkpoint).

    Raises:
        NonFiniteLossError: the loss, or a parameter after an update, became NaN/inf (no step
            is taken on such a loss and no such state is saved; the last checkpoint holds the
            last good state).
        ValueError: bad shapes, counts below 1, an empty training set, an unwritable
            ``checkpoint_path``, or a checkpoint there made for another architecture, seed,
            optimizer or batch size, or holding weights only (``save_vae``).
        CheckpointError: the checkpoint there is truncated or corrupt.
    """
    if train_images.dim() != 2 or train_images.shape[1] != model.data_dim:
        raise ValueError(
            f"train_images must have shape (N, {model.data_dim}); received "
            f"{tuple(train_images.shape)}"
        )
    if test_images is not None and (test_images.dim() != 2
                                    or test_images.shape[1] != model.data_dim):
        raise ValueError(
            f"test_images must have shape (M, {model.data_dim}); received "
            f"{tuple(test_images.shape)}"
        )
    _check_positive(num_epochs=num_epochs, batch_size=batch_size, num_samples=num_samples,
                    checkpoint_every=checkpoint_every, log_every=log_every,
                    anneal_steps=anneal_steps)
    if train_images.shape[0] == 0:
        raise ValueError(
            f"train_images is empty: expected at least one image of shape ({model.data_dim},); "
            f"received shape {tuple(train_images.shape)}"
        )
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if checkpoint_path is not None:
        _check_writable(checkpoint_path)
    device = next(model.parameters()).device
    train_images = train_images.to(device)
    steps_per_epoch = math.ceil(train_images.shape[0] / batch_size)
    total_steps = num_epochs * steps_per_epoch
    opt = make_optimizer(model.parameters(), optimizer, lr)
    generator = torch.Generator(device=device).manual_seed(seed)
    history = VAEHistory()
    step = 0
    # running sums of the minibatch ELBO: since the last log entry, and over the current epoch
    acc = {"log_sum": 0.0, "log_count": 0, "epoch_sum": 0.0, "epoch_count": 0}
    settings = {"batch_size": batch_size, "num_samples": num_samples, "seed": seed,
                "optimizer": optimizer, "lr": lr, "anneal": anneal, "anneal_steps": anneal_steps}

    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path, map_location=device)
        if complete_config(state["config"]) != model.config:
            raise ValueError(
                f"checkpoint {checkpoint_path} was made for a VAE with config {state['config']}, "
                f"not {model.config}; delete it or build the model with build_vae(config)"
            )
        if "optimizer" not in state or "step" not in state:
            raise ValueError(
                f"checkpoint {checkpoint_path} holds weights only (as written by save_vae), not "
                "a training state with optimizer, generator and step; fit_vae resumes only from "
                "its own checkpoint_path. Load these weights with load_vae, or pass another path"
            )
        # A resume continues the same run: the settings that fix which steps are taken
        # (shuffles, noise, optimizer state) must match; the others apply from here on and
        # are recorded in history.setting_changes.
        saved = state.get("settings", {})
        for name in ("batch_size", "seed", "optimizer"):
            if name in saved and saved[name] != settings[name]:
                raise ValueError(
                    f"checkpoint {checkpoint_path} was trained with {name} = {saved[name]!r}; "
                    f"received {name} = {settings[name]!r}. Resume with the same {name}, or "
                    "start a new run with another checkpoint_path"
                )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for group in opt.param_groups:  # the lr passed now, not the one stored
            group["lr"] = lr
        generator.set_state(state["generator"].to("cpu"))
        step = int(state["step"])
        history = VAEHistory.from_dict(state["history"])
        acc = dict(state["accumulators"])
        history.resumed_from.append(step)
        for name, value in settings.items():
            if name in saved and saved[name] != value:
                history.setting_changes.append(
                    {"step": step, "name": name, "old": saved[name], "new": value})
        history.finished = step >= total_steps

    def checkpoint() -> None:
        if checkpoint_path is None:
            return
        # the last update may have made a parameter NaN or inf (its loss is not computed
        # yet): never save such a state over the last good checkpoint
        for name, param in model.named_parameters():
            if not bool(torch.isfinite(param).all()):
                raise NonFiniteLossError(
                    f"parameter {name} became NaN or infinite in the update of step {step - 1}; "
                    "training stopped without saving this state (the checkpoint holds the last "
                    "good one). Lower the learning rate (a resume applies the new lr) or clip "
                    "gradients (max_grad_norm)."
                )
        save_checkpoint({
            "format": CHECKPOINT_FORMAT, "config": dict(model.config),
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "generator": generator.get_state(), "step": step,
            "epoch": step // steps_per_epoch, "history": history.as_dict(),
            "accumulators": dict(acc), "settings": settings,
        }, checkpoint_path)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="fit_vae", leave=False)
    start_time = time.perf_counter()
    seconds_before = history.seconds
    model.train()
    try:
        while step < total_steps:
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            epoch_batches = batches(train_images, batch_size, generator=_epoch_generator(seed, epoch))
            for images in itertools.islice(epoch_batches, step_in_epoch, None):
                x = binarize(images, generator=generator)
                beta = annealed_beta(step, num_steps=anneal_steps) if anneal else 1.0
                terms = bound(model, x, num_samples, beta, generator)
                check_finite_loss(terms.loss, step)
                opt.zero_grad(set_to_none=True)
                terms.loss.backward()
                if max_grad_norm is not None:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                                     max_grad_norm))
                    acc["grad_norm_max"] = max(acc.get("grad_norm_max", 0.0), grad_norm)
                    acc["clipped"] = acc.get("clipped", 0) + int(grad_norm > max_grad_norm)
                if lr_schedule is not None:
                    for group in opt.param_groups:
                        group["lr"] = lr * float(lr_schedule(step))
                opt.step()
                step += 1
                elbo = float(terms.elbo.detach().mean())
                acc["log_sum"] += elbo
                acc["log_count"] += 1
                acc["epoch_sum"] += elbo
                acc["epoch_count"] += 1
                if step % log_every == 0:
                    history.steps.append(step)
                    history.train_elbo.append(acc["log_sum"] / acc["log_count"])
                    acc["log_sum"], acc["log_count"] = 0.0, 0
                    if bar is not None:
                        bar.set_postfix(bound=f"{history.train_elbo[-1]:.2f}")
                if bar is not None:
                    bar.update(1)
                if callback is not None:
                    callback(step, elbo)
                if step % steps_per_epoch == 0:  # end of an epoch
                    history.epochs.append(step // steps_per_epoch)
                    history.epoch_train_elbo.append(acc["epoch_sum"] / max(acc["epoch_count"], 1))
                    acc["epoch_sum"], acc["epoch_count"] = 0.0, 0
                    if max_grad_norm is not None:
                        history.epoch_max_grad_norm.append(acc.pop("grad_norm_max", 0.0))
                        history.epoch_clipped_steps.append(acc.pop("clipped", 0))
                    if test_images is not None:
                        model.eval()
                        history.test_elbo.append(
                            evaluate_elbo(model, test_images, eval_samples, seed=seed))
                        model.train()
                    else:
                        history.test_elbo.append(float("nan"))
                    if bar is not None:
                        bar.set_postfix(bound=f"{history.epoch_train_elbo[-1]:.2f}",
                                        test=f"{history.test_elbo[-1]:.2f}")
                elapsed = time.perf_counter() - start_time
                history.seconds = seconds_before + elapsed
                if step % checkpoint_every == 0 and step < total_steps:
                    checkpoint()
                if time_budget is not None and elapsed >= time_budget and step < total_steps:
                    checkpoint()
                    if bar is not None:
                        bar.write(f"fit_vae: time budget of {time_budget:.0f} s reached at step "
                                  f"{step}/{total_steps}; checkpoint written, call again to resume")
                    return history
                if step % steps_per_epoch == 0:
                    break
        history.finished = True
        history.seconds = seconds_before + (time.perf_counter() - start_time)
        checkpoint()
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    return history
