"""Training a VAE on binarized MNIST, and its checkpoint files.

``fit_vae`` minimizes the annealed free energy of Sec. 6.2 (Eq. 20 with beta_t on
log p(x, z_K)) with the series' one loop (``training.run_steps``): it checkpoints every N steps
(atomically), resumes from its last checkpoint, stops cleanly after a time budget (so a long run
can be cut into pieces shorter than 10 minutes) and never trains on a NaN. ``save_vae`` /
``load_vae`` read and write small weights-only files; ``evaluate_elbo`` is the per-epoch test
bound.

Randomness: the shuffle of epoch e comes from a generator seeded by (seed, e); the binarization
and the posterior noise come from one generator on the model's device whose state is
checkpointed; evaluation uses its own generator. So a run resumed from a checkpoint takes
exactly the steps an uninterrupted run takes (bit-identical on a deterministic CPU).

A resume must use the same ``seed``, ``optimizer`` and ``batch_size`` (they fix which steps are
taken); a changed ``lr``, ``num_samples``, ``anneal`` or ``anneal_steps`` applies from the
resumed step on and is recorded in ``history.setting_changes``.

The flow and amortizer code (``training``, ``amortized``) never imports this module, so it
does not depend on the VAE.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any, Callable

import torch
from torch import Tensor

from .checkpoints import CheckpointError, check_writable, load_checkpoint, save_checkpoint
from .bounds import bound
from .data import batches, binarize, check_images
from .flows import annealed_beta
from .training import Checkpoint, History, check_positive, make_optimizer, run_steps
from .vae import VAE, build_vae

__all__ = ["CHECKPOINT_FORMAT", "evaluate_elbo", "save_vae", "load_vae", "fit_vae"]

CHECKPOINT_FORMAT = "nfutils.vae/1"

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


def save_vae(model: VAE, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
             **extra: Any) -> None:
    """Save a model's weights only (no optimizer), in ``dtype``, with its config and ``extra``
    entries (e.g. ``history=history.as_dict()``, budgets): small files, fit to commit beside
    the code. Written atomically with a checksum; read back with ``load_vae``."""
    weights = {name: tensor.detach().to("cpu", dtype) for name, tensor in model.state_dict().items()}
    save_checkpoint({"format": CHECKPOINT_FORMAT, "config": dict(model.config),
                     "model": weights, **extra}, path)


def load_vae(path: str | os.PathLike, device: str | torch.device | None = None
             ) -> tuple[VAE, dict[str, Any]]:
    """Rebuild a ``VAE`` from a checkpoint of ``save_vae`` or ``fit_vae`` (float32 weights).

    Returns:
        (model, checkpoint dict) with the model in eval mode on ``device`` (default CPU); the
        dict's ``"history"``, when present, reads back with ``training.History.from_dict``.

    Raises:
        FileNotFoundError, CheckpointError: see ``checkpoints.load_checkpoint``; also a
            CheckpointError when the weights do not match the config.
        ValueError: the config lacks keys of ``vae.CONFIG_KEYS`` or has others
            (``vae.build_vae``).
    """
    state = load_checkpoint(path, required=("model", "config"))
    model = build_vae(state["config"])
    weights = {name: tensor.float() for name, tensor in state["model"].items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not match its config: {error}") from error
    return model.to(device or "cpu").eval(), state


def _step_batches(images: Tensor, batch_size: int, seed: int) -> Callable[[int], Tensor]:
    """step t -> its minibatch: batch ``t % steps_per_epoch`` of the shuffle of epoch
    ``t // steps_per_epoch``, drawn by a generator seeded by (seed, epoch) alone, so that a
    resumed run replays the rest of an interrupted epoch in the same order."""
    steps_per_epoch = math.ceil(images.shape[0] / batch_size)
    current: dict[str, Any] = {"epoch": None, "iterator": None}

    def batch_at(step: int) -> Tensor:
        epoch, index = divmod(step, steps_per_epoch)
        if current["epoch"] != epoch:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            current.update(epoch=epoch, iterator=itertools.islice(
                batches(images, batch_size, generator=generator), index, None))
        return next(current["iterator"])

    return batch_at


def _check_arguments(model: VAE, train_images: Tensor, test_images: Tensor | None, lr: float,
                     checkpoint_path: str | os.PathLike | None, **counts: int) -> None:
    """fit_vae's arguments, all checked before the first step (the images once, in full)."""
    for name, images, rows in (("train_images", train_images, "N"),
                               ("test_images", test_images, "M")):
        if images is not None and (images.dim() != 2 or images.shape[1] != model.data_dim):
            raise ValueError(f"{name} must have shape ({rows}, {model.data_dim}); received "
                             f"{tuple(images.shape)}")
    check_positive(**counts)
    if train_images.shape[0] == 0:
        raise ValueError(
            f"train_images is empty: expected at least one image of shape ({model.data_dim},); "
            f"received shape {tuple(train_images.shape)}")
    check_images(train_images, "train_images")  # grey levels: binarized afresh at each step
    if test_images is not None:
        check_images(test_images, "test_images", binary=True)  # the bound takes them as they are
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if checkpoint_path is not None:
        check_writable(checkpoint_path)


def _check_resumable(state: dict[str, Any], path: str | os.PathLike, config: dict[str, Any],
                     settings: dict[str, Any]) -> None:
    """Refuse a checkpoint of another architecture, one holding weights only, or one trained
    with another seed, optimizer or batch size (it would be another run)."""
    if state["config"] != config:
        raise ValueError(f"checkpoint {path} was made for a VAE with config {state['config']}, "
                         f"not {config}; delete it or build the model with build_vae(config)")
    if "optimizer" not in state or "step" not in state:
        raise ValueError(
            f"checkpoint {path} holds weights only (as written by save_vae), not a training "
            "state with optimizer, generator and step; fit_vae resumes only from its own "
            "checkpoint_path. Load these weights with load_vae, or pass another path")
    saved = state.get("settings", {})
    for name in ("batch_size", "seed", "optimizer"):
        if name in saved and saved[name] != settings[name]:
            raise ValueError(
                f"checkpoint {path} was trained with {name} = {saved[name]!r}; received "
                f"{name} = {settings[name]!r}. Resume with the same {name}, or start a new "
                "run with another checkpoint_path")


def _restore(state: dict[str, Any], history: History, sums: dict[str, Any],
             settings: dict[str, Any]) -> None:
    """After a resume: the running sums, and the settings changed since (recorded)."""
    sums.clear()
    sums.update(state["accumulators"])
    step = history.resumed_from[-1]
    for name, value in settings.items():
        old = state.get("settings", {}).get(name, value)
        if old != value:
            history.setting_changes.append({"step": step, "name": name, "old": old, "new": value})


def _checkpoint(path: str | os.PathLike, model: VAE, generator: torch.Generator,
                history: History, sums: dict[str, Any], settings: dict[str, Any],
                steps_per_epoch: int) -> Checkpoint:
    """fit_vae's ``training.Checkpoint``: beside the common state, the config, the epoch, the
    running sums and the settings; a resume checks them (``_check_resumable``) and restores
    the sums (``_restore``)."""
    return Checkpoint(
        path, generator, map_location=next(model.parameters()).device,
        required=("model", "config"),
        extra=lambda done: {"format": CHECKPOINT_FORMAT, "config": dict(model.config),
                            "epoch": done // steps_per_epoch, "accumulators": dict(sums),
                            "settings": settings},
        check=lambda state: _check_resumable(state, path, model.config, settings),
        on_resume=lambda state: _restore(state, history, sums, settings))


def _epoch_end(model: VAE, history: History, sums: dict[str, Any], epoch: int,
               test_images: Tensor | None, eval_samples: int, seed: int, clipping: bool
               ) -> dict[str, str]:
    """Record epoch ``epoch``: its mean minibatch ELBO, the test ELBO, the clipping counts."""
    history.epochs.append(epoch)
    history.epoch_train_elbo.append(sums["epoch_sum"] / max(sums["epoch_count"], 1))
    sums["epoch_sum"], sums["epoch_count"] = 0.0, 0
    if clipping:
        history.epoch_max_grad_norm.append(sums.pop("grad_norm_max", 0.0))
        history.epoch_clipped_steps.append(sums.pop("clipped", 0))
    test_elbo = float("nan")
    if test_images is not None:
        model.eval()
        test_elbo = evaluate_elbo(model, test_images, eval_samples, seed=seed)
        model.train()
    history.test_elbo.append(test_elbo)
    return {"bound": f"{history.epoch_train_elbo[-1]:.2f}", "test": f"{test_elbo:.2f}"}


def _recorder(model: VAE, optimizer: torch.optim.Optimizer, history: History, sums: dict[str, Any],
              elbo_of_step: dict[str, Tensor], steps_per_epoch: int, log_every: int,
              max_grad_norm: float | None, callback: Callable[[int, float], None] | None,
              **evaluation: Any) -> Callable[[int, Tensor, float | None], dict[str, str] | None]:
    """fit_vae's ``after_step``: running sums of the minibatch ELBO, a record every
    ``log_every`` steps, the epoch's record at its end (``_epoch_end``), the callback."""

    def record(step: int, loss: Tensor, grad_norm: float | None) -> dict[str, str] | None:
        done, shown = step + 1, None
        if grad_norm is not None:
            sums["grad_norm_max"] = max(sums.get("grad_norm_max", 0.0), grad_norm)
            sums["clipped"] = sums.get("clipped", 0) + int(grad_norm > max_grad_norm)
        elbo = float(elbo_of_step["value"].detach().mean())
        for prefix in ("log", "epoch"):
            sums[f"{prefix}_sum"] += elbo
            sums[f"{prefix}_count"] += 1
        if done % log_every == 0:
            history.steps.append(done)
            history.train_elbo.append(sums["log_sum"] / sums["log_count"])
            history.lr.append(optimizer.param_groups[0]["lr"])
            sums["log_sum"], sums["log_count"] = 0.0, 0
            shown = {"bound": f"{history.train_elbo[-1]:.2f}"}
        if callback is not None:
            callback(done, elbo)
        if done % steps_per_epoch == 0:
            shown = _epoch_end(model, history, sums, done // steps_per_epoch,
                               clipping=max_grad_norm is not None, **evaluation)
        return shown

    return record


def fit_vae(
    model: VAE, train_images: Tensor, test_images: Tensor | None = None, num_epochs: int = 10,
    batch_size: int = 100, num_samples: int = 1, lr: float = 1e-3, optimizer: str = "adam",
    anneal: bool = True, anneal_steps: int = 10_000,
    checkpoint_path: str | os.PathLike | None = None, checkpoint_every: int = 1000,
    time_budget: float | None = None, seed: int = 0, eval_samples: int = 1, log_every: int = 100,
    progress: bool = True, callback: Callable[[int, float], None] | None = None,
    lr_schedule: Callable[[int], float] | None = None, max_grad_norm: float | None = None,
) -> History:
    """Train a VAE by minimizing the annealed free energy (Eq. 20; Sec. 6.2) on binarized data.

    Each step: a minibatch of grey-level images is binarized afresh (x ~ Bernoulli(image),
    dynamic binarization), S = ``num_samples`` posterior samples per x give the loss
    E[log q_K(z_K|x) - beta_t (log p(x|z_K) + log p(z_K))] with
    beta_t = min(1, 0.01 + t / anneal_steps) (or 1 when ``anneal`` is False), one optimizer
    step. Resumes, randomness and settings: see the module docstring.

    Args:
        model: the VAE, trained in place on its current device.
        train_images: (N, D) grey levels in [0, 1] (e.g. ``data.load_mnist("train")[0]``).
        test_images: (M, D) fixed binary images (``data.binarized_test_set()[0]``), evaluated
            after every epoch (S = ``eval_samples``); None skips evaluation.
        num_epochs: total epochs (counting those done before a resume).
        batch_size: images per step (the paper: 100). num_samples: S per x.
        lr, optimizer: see ``training.make_optimizer``. anneal, anneal_steps: beta_t's schedule.
        checkpoint_path: where to keep the training state (model, optimizer, generator, step,
            epoch, history); if the file exists, training resumes from it.
        checkpoint_every: steps between checkpoints (also one at the end and at a stop).
        time_budget: stop cleanly (with a checkpoint) after this many seconds; call again.
        seed: seed of all training randomness. log_every: steps between records.
        progress: show a tqdm bar. callback: ``callback(steps_done, elbo)`` after every step.
        lr_schedule: multiplier of ``lr`` as a function of the global step t (from 0), e.g.
            ``training.warmup_cosine``. max_grad_norm: clip the gradients' global norm.

    Returns:
        ``training.History`` (also in the checkpoint): ``steps``, ``train_elbo``, ``lr``, the
        per-epoch fields and the per-run fields.

    Raises:
        NonFiniteLossError: the loss, or a parameter after an update, became NaN/inf.
        ValueError: bad shapes or counts; training images empty, non-finite or outside [0, 1];
            test images not binary; an unwritable ``checkpoint_path``, or a checkpoint there
            of another architecture, seed, optimizer or batch size, or of weights only.
        CheckpointError: the checkpoint there is truncated or corrupt.
    """
    _check_arguments(model, train_images, test_images, lr, checkpoint_path,
                     num_epochs=num_epochs, batch_size=batch_size, num_samples=num_samples,
                     checkpoint_every=checkpoint_every, log_every=log_every,
                     anneal_steps=anneal_steps)
    device = next(model.parameters()).device
    train_images = train_images.to(device)
    steps_per_epoch = math.ceil(train_images.shape[0] / batch_size)
    opt = make_optimizer(model.parameters(), optimizer, lr)
    generator = torch.Generator(device=device).manual_seed(seed)
    history, elbo_of_step = History(), {}
    sums: dict[str, Any] = {"log_sum": 0.0, "log_count": 0, "epoch_sum": 0.0, "epoch_count": 0}
    settings = {"batch_size": batch_size, "num_samples": num_samples, "seed": seed,
                "optimizer": optimizer, "lr": lr, "anneal": anneal, "anneal_steps": anneal_steps}
    batch_at = _step_batches(train_images, batch_size, seed)

    def step_loss(step: int) -> Tensor:
        x = binarize(batch_at(step), generator=generator)
        beta = annealed_beta(step, num_steps=anneal_steps) if anneal else 1.0
        terms = bound(model, x, num_samples, beta, generator)
        elbo_of_step["value"] = terms.elbo
        return terms.loss

    checkpoint = None if checkpoint_path is None else _checkpoint(
        checkpoint_path, model, generator, history, sums, settings, steps_per_epoch)
    record = _recorder(model, opt, history, sums, elbo_of_step, steps_per_epoch, log_every,
                       max_grad_norm, callback, test_images=test_images,
                       eval_samples=eval_samples, seed=seed)
    model.train()
    try:
        return run_steps(model, opt, step_loss, history, num_epochs * steps_per_epoch, lr,
                         lr_factor=lr_schedule, max_grad_norm=max_grad_norm, after_step=record,
                         checkpoint_every=checkpoint_every, time_budget=time_budget,
                         progress=progress, desc="fit_vae", checkpoint=checkpoint)
    finally:
        model.eval()
