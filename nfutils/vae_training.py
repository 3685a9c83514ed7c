"""Training a VAE on binarized MNIST (Parts 3 and 4), and its checkpoint files.

``fit_vae`` minimizes the annealed free energy of Sec. 6.2 (Eq. 20 with beta_t on
log p(x, z_K)) with the series' one loop (``training.run_steps``): it checkpoints every N steps
(atomically), resumes from its last checkpoint, stops cleanly after a time budget (so a long run
can be cut into pieces shorter than 10 minutes) and never trains on a NaN. ``save_vae`` /
``load_vae`` read and write the small weights-only files under ``data/checkpoints/``;
``evaluate_elbo`` is the per-epoch test bound.

Part 2's code (``amortized``, ``training``) never imports this module, so it does not depend on
the VAE.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from .checkpoints import (
    CheckpointError,
    check_writable,
    load_checkpoint,
    save_checkpoint,
    unconverted_checkpoint,
)
from .data import batches, binarize
from .flows import annealed_beta
from .training import History, check_positive, make_optimizer, run_steps
from .vae import CONFIG_KEYS, VAE, bound, build_vae

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


def _checked_config(state: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's VAE config; a clear error when it lacks keys of ``VAE.config``."""
    missing = sorted(set(CONFIG_KEYS) - set(state["config"]))
    if missing:
        raise unconverted_checkpoint(path, f"its config lacks {missing}")
    return state["config"]


def save_vae(model: VAE, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
             **extra: Any) -> None:
    """Save a model's weights only (no optimizer), in ``dtype``, with its config and ``extra``
    entries (e.g. ``history=history.as_dict()``, budgets): the small files committed under
    ``data/checkpoints/``. Written atomically with a checksum; read back with ``load_vae``."""
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
            CheckpointError when the weights do not match the config, or when the config lacks
            keys (convert the file once with tools/convert_checkpoints.py).
    """
    state = load_checkpoint(path, required=("model", "config"))
    model = build_vae(_checked_config(state, path))
    weights = {name: tensor.float() for name, tensor in state["model"].items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not match its config: {error}") from error
    return model.to(device or "cpu").eval(), state


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
) -> History:
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
        lr, optimizer: see ``training.make_optimizer`` ("adam", fused where possible, or
            "rmsprop").
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
            step about to be taken, from 0), e.g. ``training.warmup_cosine``.
        max_grad_norm: clip the gradients' global norm to this value (None: no clipping).

    Returns:
        ``training.History`` (also stored in the checkpoint, as ``History.as_dict()``), with
        ``steps``, ``train_elbo``, ``lr``, the per-epoch fields and the per-run fields.

    Raises:
        NonFiniteLossError: the loss, or a parameter after an update, became NaN/inf (no step
            is taken on such a loss and no such state is saved; the last checkpoint holds the
            last good state).
        ValueError: bad shapes, counts below 1, an empty training set, an unwritable
            ``checkpoint_path``, or a checkpoint there made for another architecture, seed,
            optimizer or batch size, or holding weights only (``save_vae``).
        CheckpointError: the checkpoint there is truncated or corrupt.
    """
    for name, images, rows in (("train_images", train_images, "N"),
                               ("test_images", test_images, "M")):
        if images is not None and (images.dim() != 2 or images.shape[1] != model.data_dim):
            raise ValueError(f"{name} must have shape ({rows}, {model.data_dim}); received "
                             f"{tuple(images.shape)}")
    check_positive(num_epochs=num_epochs, batch_size=batch_size, num_samples=num_samples,
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
        check_writable(checkpoint_path)
    device = next(model.parameters()).device
    train_images = train_images.to(device)
    steps_per_epoch = math.ceil(train_images.shape[0] / batch_size)
    total_steps = num_epochs * steps_per_epoch
    opt = make_optimizer(model.parameters(), optimizer, lr)
    generator = torch.Generator(device=device).manual_seed(seed)
    history = History()
    start_step = 0
    # running sums of the minibatch ELBO: since the last log entry, and over the current epoch
    acc: dict[str, Any] = {"log_sum": 0.0, "log_count": 0, "epoch_sum": 0.0, "epoch_count": 0}
    settings = {"batch_size": batch_size, "num_samples": num_samples, "seed": seed,
                "optimizer": optimizer, "lr": lr, "anneal": anneal, "anneal_steps": anneal_steps}

    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path, map_location=device, required=("model", "config"))
        if _checked_config(state, checkpoint_path) != model.config:
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
        start_step = int(state["step"])
        history = History.from_dict(state["history"])
        acc = dict(state["accumulators"])
        history.resumed_from.append(start_step)
        for name, value in settings.items():
            if name in saved and saved[name] != value:
                history.setting_changes.append(
                    {"step": start_step, "name": name, "old": saved[name], "new": value})
        history.finished = start_step >= total_steps

    epoch_batches: dict[str, Any] = {"epoch": None, "iterator": None}

    def batch_at(step: int) -> Tensor:
        """The minibatch of global step ``step``: batch ``step % steps_per_epoch`` of the
        shuffle of epoch ``step // steps_per_epoch``."""
        epoch, index = divmod(step, steps_per_epoch)
        if epoch_batches["epoch"] != epoch:
            shuffle = batches(train_images, batch_size, generator=_epoch_generator(seed, epoch))
            epoch_batches["epoch"] = epoch
            epoch_batches["iterator"] = itertools.islice(shuffle, index, None)
        iterator: Iterator[Tensor] = epoch_batches["iterator"]
        return next(iterator)

    last_elbo = {}

    def step_loss(step: int) -> Tensor:
        x = binarize(batch_at(step), generator=generator)
        beta = annealed_beta(step, num_steps=anneal_steps) if anneal else 1.0
        terms = bound(model, x, num_samples, beta, generator)
        last_elbo["value"] = terms.elbo
        return terms.loss

    def record(step: int, loss: Tensor, grad_norm: float | None) -> dict[str, str] | None:
        done = step + 1
        shown = None
        if grad_norm is not None:
            acc["grad_norm_max"] = max(acc.get("grad_norm_max", 0.0), grad_norm)
            acc["clipped"] = acc.get("clipped", 0) + int(grad_norm > max_grad_norm)
        elbo = float(last_elbo["value"].detach().mean())
        acc["log_sum"] += elbo
        acc["log_count"] += 1
        acc["epoch_sum"] += elbo
        acc["epoch_count"] += 1
        if done % log_every == 0:
            history.steps.append(done)
            history.train_elbo.append(acc["log_sum"] / acc["log_count"])
            history.lr.append(opt.param_groups[0]["lr"])
            acc["log_sum"], acc["log_count"] = 0.0, 0
            shown = {"bound": f"{history.train_elbo[-1]:.2f}"}
        if callback is not None:
            callback(done, elbo)
        if done % steps_per_epoch == 0:  # end of an epoch
            history.epochs.append(done // steps_per_epoch)
            history.epoch_train_elbo.append(acc["epoch_sum"] / max(acc["epoch_count"], 1))
            acc["epoch_sum"], acc["epoch_count"] = 0.0, 0
            if max_grad_norm is not None:
                history.epoch_max_grad_norm.append(acc.pop("grad_norm_max", 0.0))
                history.epoch_clipped_steps.append(acc.pop("clipped", 0))
            if test_images is not None:
                model.eval()
                history.test_elbo.append(evaluate_elbo(model, test_images, eval_samples, seed=seed))
                model.train()
            else:
                history.test_elbo.append(float("nan"))
            shown = {"bound": f"{history.epoch_train_elbo[-1]:.2f}",
                     "test": f"{history.test_elbo[-1]:.2f}"}
        return shown

    def save(done: int) -> None:
        if checkpoint_path is None:
            return
        save_checkpoint({
            "format": CHECKPOINT_FORMAT, "config": dict(model.config),
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "generator": generator.get_state(), "step": done,
            "epoch": done // steps_per_epoch, "history": history.as_dict(),
            "accumulators": dict(acc), "settings": settings,
        }, checkpoint_path)

    model.train()
    try:
        run_steps(model, opt, step_loss, history, total_steps, lr, start_step=start_step,
                  lr_factor=lr_schedule, max_grad_norm=max_grad_norm, after_step=record,
                  save=save, checkpoint_every=checkpoint_every, time_budget=time_budget,
                  progress=progress, desc="fit_vae")
    finally:
        model.eval()
    return history
