"""The training loop of the series, shared by every model, and the one ``History`` it fills.

Every model of the series is trained the same way: draw samples, compute a free energy (Eq. 15
for a flow fitted to a 2-D target, Eq. 20 for a VAE), take one optimizer step. ``run_steps`` is
that loop, written once:

    resume from the ``Checkpoint``'s file when it exists (model, optimizer, generator, history)
    for t in start_step .. num_steps - 1:
        lr_t = lr * lr_factor(t)                 (a function of t alone: resumes follow it)
        loss = step_loss(t)
        stop on a NaN or infinite loss, *before* the update (``check_finite_loss``)
        backward, clip the gradient's global norm (optional), optimizer step
        after_step(t, ...): the caller records what it wants in the ``History``
        every ``checkpoint_every`` steps and when ``time_budget`` runs out: save, atomically,
        but never a state whose parameters became NaN or infinite

Fitting a model is then a short function that hands the loop a loss and its data:
``fit_flow`` here (a flow fitted to a 2-D target), ``amortized.fit_amortized`` (a conditional
flow), ``vae_training.fit_vae`` (a VAE on binarized images) and
``local_posteriors.fit_local_posteriors`` (one flow posterior per image), each in its own
module, so that this one needs no model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .checkpoints import load_checkpoint, save_checkpoint
from .flows import NormalizingFlow, annealed_beta, free_energy
from .optim import make_optimizer, warmup_cosine  # noqa: F401  (part of the loop's API)

__all__ = ["NonFiniteLossError", "check_finite_loss", "check_finite_parameters", "check_positive",
           "History", "make_optimizer", "warmup_cosine", "Checkpoint", "run_steps", "fit_flow"]


class NonFiniteLossError(RuntimeError):
    """Raised when a loss is NaN or infinite; training stops rather than continue on it."""


def check_positive(**counts: int) -> None:
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
            "or clip gradients.")


def check_finite_parameters(model: nn.Module, step: int) -> None:
    """Raise ``NonFiniteLossError`` when an update (that of step ``step``) made a parameter
    NaN or infinite: its loss is not computed yet, so ``check_finite_loss`` cannot see it."""
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise NonFiniteLossError(
                f"parameter {name} became NaN or infinite in the update of step {step}; "
                "training stopped without saving this state (the checkpoint holds the last "
                "good one). Lower the learning rate (a resume applies the new lr) or clip "
                "gradients (max_grad_norm).")


@dataclass
class History:
    """What a training loop records. Each loop fills the fields that apply to it.

    Per record (every ``log_every`` steps):
        steps: the step of each record (``fit_flow`` and ``fit_amortized``: the index of the
            step, from 0, and the last step; ``fit_vae``: the number of steps done).
        free_energy: F at beta = 1 on the step's own samples (Eq. 15), in nats.
        kl: KL(q || p) = F + log Z in nats, when log Z is known.
        lr: the learning rate of the step.
        train_elbo: ``fit_vae``: the mean minibatch ELBO (Eq. 20) since the previous record.

    Per completed epoch (``fit_vae``):
        epochs: the epoch's number, from 1.
        epoch_train_elbo, test_elbo: the mean minibatch ELBO over the epoch and the ELBO of the
            fixed test set (NaN without one).
        epoch_max_grad_norm, epoch_clipped_steps: with gradient clipping on, the largest
            gradient norm before clipping and how many steps it clipped (empty without).

    Per run:
        seconds: training wall time, summed over resumed pieces.
        resumed_from: the steps at which the run resumed from a checkpoint (empty: one piece).
        setting_changes: settings changed on a resume, as dicts {"step", "name", "old", "new"}
            (e.g. a lower ``lr`` after a NaN stop).
        finished: True when all steps ran (False after a time-budget stop).
    """

    steps: list[int] = field(default_factory=list)
    free_energy: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    train_elbo: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    epoch_train_elbo: list[float] = field(default_factory=list)
    test_elbo: list[float] = field(default_factory=list)
    epoch_max_grad_norm: list[float] = field(default_factory=list)
    epoch_clipped_steps: list[int] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: list[int] = field(default_factory=list)
    setting_changes: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False

    def add_free_energy(self, step: int, value: float, lr: float,
                        log_Z: float | None = None) -> None:
        """Record F at ``step`` (and KL = F + log Z when ``log_Z`` is known), with the lr."""
        self.steps.append(step)
        self.free_energy.append(value)
        self.lr.append(lr)
        if log_Z is not None:
            self.kl.append(value + log_Z)

    def as_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (what a ``weights_only`` checkpoint stores)."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "History":
        """The inverse of ``as_dict``; fields missing from ``values`` start empty."""
        known = {item.name for item in fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in known})


@dataclass
class Checkpoint:
    """Where a resumable run keeps its state, and what it adds to the common part.

    ``run_steps`` writes ``{"model", "optimizer", "generator", "history", "step"}`` plus
    ``extra(steps_done)`` to ``path`` (atomically, ``checkpoints.save_checkpoint``); when
    ``path`` exists, it resumes from it: ``check(state)`` may refuse the file (raise
    ``ValueError``) before anything changes, then the model, the optimizer (with the ``lr``
    passed now), ``generator`` and the history are restored, the stored step appended to
    ``history.resumed_from``, and ``on_resume(state)`` restores what the caller keeps itself.

    Attributes:
        path: the checkpoint file. generator: the run's random numbers (state saved).
        extra: steps_done -> the caller's entries (config, settings, running sums).
        check, on_resume: see above. required: keys the file must hold.
        map_location: where to load the tensors (the model's device).
    """

    path: str | os.PathLike
    generator: torch.Generator | None = None
    extra: Callable[[int], dict[str, Any]] = lambda done: {}
    check: Callable[[dict[str, Any]], None] | None = None
    on_resume: Callable[[dict[str, Any]], None] | None = None
    required: tuple[str, ...] = ()
    map_location: str | torch.device | None = None

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, history: History,
               lr: float) -> int | None:
        """Restore the run stored at ``path``; returns its step (None: no file, a fresh run)."""
        if not Path(self.path).is_file():
            return None
        state = load_checkpoint(self.path, map_location=self.map_location, required=self.required)
        if self.check is not None:
            self.check(state)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # the lr passed now, not the one stored
            group["lr"] = lr
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"].to("cpu"))
        vars(history).update(vars(History.from_dict(state["history"])))
        start_step = int(state["step"])
        history.resumed_from.append(start_step)
        if self.on_resume is not None:
            self.on_resume(state)
        return start_step

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, history: History,
             done: int) -> None:
        """Write the state after ``done`` steps."""
        save_checkpoint({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": None if self.generator is None else self.generator.get_state(),
            "history": history.as_dict(), "step": done, **self.extra(done),
        }, self.path)


def _step(optimizer: torch.optim.Optimizer, step_loss: Callable[[int], Tensor], step: int,
          lr: float, lr_factor: Callable[[int], float] | None, max_grad_norm: float | None
          ) -> tuple[Tensor, float | None]:
    """One step t: set lr_t, compute the loss, stop on NaN before the update, backward, clip
    the gradients' global norm (optional), update. Returns the loss and the norm before
    clipping (None without clipping)."""
    if lr_factor is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr * float(lr_factor(step))
    loss = step_loss(step)
    check_finite_loss(loss, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = None
    if max_grad_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    optimizer.step()
    return loss, grad_norm


def _progress_bar(progress: bool, num_steps: int, start_step: int, desc: str):
    """A tqdm bar from ``start_step`` to ``num_steps`` (None without ``progress``)."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=num_steps, initial=start_step, desc=desc, leave=False)


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer,
              step_loss: Callable[[int], Tensor], history: History, num_steps: int, lr: float,
              lr_factor: Callable[[int], float] | None = None, max_grad_norm: float | None = None,
              after_step: Callable[[int, Tensor, float | None], dict[str, str] | None] | None = None,
              checkpoint_every: int | None = None, time_budget: float | None = None,
              progress: bool = False, desc: str = "fit", checkpoint: Checkpoint | None = None
              ) -> History:
    """Take optimizer steps 0 .. ``num_steps - 1`` on ``step_loss`` (from the stored step when
    ``checkpoint`` resumes a run): the loop that every ``fit_*`` of the series runs (see the
    module docstring).

    Args:
        model: the module whose parameters ``optimizer`` updates (checked for NaN before a save).
        step_loss: t -> the scalar loss of step t (draws its own samples or minibatch).
        history: updated in place: ``seconds``, ``finished``; ``after_step`` records the rest.
        num_steps: total steps of the run, counting those done before a resume.
        lr: the base learning rate; step t uses lr * lr_factor(t) (lr without ``lr_factor``,
            a function of t alone, e.g. ``warmup_cosine``: a resumed run follows the schedule).
        max_grad_norm: clip the gradients' global norm to this value (None: no clipping).
        after_step: ``after_step(t, loss, grad_norm)`` after the update of step t (``loss``
            detached; ``grad_norm`` before clipping, or None); may return a dict to show
            beside the progress bar.
        checkpoint_every: steps between saves of ``checkpoint``.
        time_budget: stop cleanly (with a save) after this many seconds of this call.
        progress: show a tqdm bar labelled ``desc``.
        checkpoint: resume from ``checkpoint.path`` when it exists, and save there every
            ``checkpoint_every`` steps, at a time-budget stop and at the end, never a state
            with non-finite parameters.

    Returns:
        ``history``; ``history.finished`` is False after a time-budget stop.

    Raises:
        NonFiniteLossError: a loss, or a parameter after an update, became NaN or infinite (no
            step is taken on such a loss and no such state is saved).
    """
    start_step = 0 if checkpoint is None else checkpoint.resume(model, optimizer, history, lr) or 0

    def checkpoint_at(done: int) -> None:
        if checkpoint is not None:
            check_finite_parameters(model, done - 1)
            checkpoint.save(model, optimizer, history, done)

    bar = _progress_bar(progress, num_steps, start_step, desc)
    started, seconds_before = time.perf_counter(), history.seconds
    try:
        for step in range(start_step, num_steps):
            loss, grad_norm = _step(optimizer, step_loss, step, lr, lr_factor, max_grad_norm)
            shown = after_step(step, loss.detach(), grad_norm) if after_step is not None else None
            if bar is not None:
                if shown:
                    bar.set_postfix(**shown)
                bar.update(1)
            elapsed = time.perf_counter() - started
            history.seconds = seconds_before + elapsed
            done = step + 1
            if done < num_steps and checkpoint_every is not None and done % checkpoint_every == 0:
                checkpoint_at(done)
            if done < num_steps and time_budget is not None and elapsed >= time_budget:
                checkpoint_at(done)
                if bar is not None:
                    bar.write(f"{desc}: time budget of {time_budget:.0f} s reached at step "
                              f"{done}/{num_steps}; checkpoint written, call again to resume")
                return history
        history.finished = True
        if start_step < num_steps:  # a run that was already complete is not written again
            history.seconds = seconds_before + (time.perf_counter() - started)
            checkpoint_at(num_steps)
    finally:
        if bar is not None:
            bar.close()
    return history


def fit_flow(model: NormalizingFlow, energy: Callable[[Tensor], Tensor], num_steps: int = 10_000,
             num_samples: int = 1000, lr: float = 2e-3, anneal: bool = False,
             log_Z: float | None = None, log_every: int = 100, progress: bool = False,
             generator: torch.Generator | None = None, anneal_steps: int = 10_000) -> History:
    """Minimize the free energy F = E_q[log q_K(z_K) + beta_t U(z_K)] (Eq. 15) with Adam.

    Args:
        model: the flow q_K (its parameters are trained in place).
        energy: the target's energy U, (n, 2) -> (n,).
        num_steps: Adam steps. num_samples: samples per step. lr: learning rate.
        anneal: use the paper's beta_t = min(1, 0.01 + t / anneal_steps); otherwise beta = 1.
        log_Z: log of the target's normalizer (``potentials.log_partition``); when given, the
            history holds KL(q || p) in nats.
        log_every: record F (at beta = 1, on the step's own samples) every this many steps,
            and at the last step.
        progress: show a tqdm bar.
        generator: random numbers of the base samples (reproducible runs).
        anneal_steps: T of the annealing schedule (the paper's 10,000); beta = 1 from step T on.

    Returns:
        ``History`` with ``steps``, ``free_energy``, ``lr``, ``kl`` (with ``log_Z``), ``seconds``.

    Raises:
        NonFiniteLossError: if the loss is not finite at some step.
        ValueError: if a count is below 1 or lr is not positive.
    """
    check_positive(num_steps=num_steps, num_samples=num_samples, log_every=log_every,
                   anneal_steps=anneal_steps)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    optimizer = make_optimizer(model.parameters(), "adam", lr)
    history = History()
    drawn = {}  # the current step's samples: F is recorded at beta = 1 even when annealing

    def step_loss(step: int) -> Tensor:
        z_k, log_q = model.rsample(num_samples, generator=generator)
        energy_values = energy(z_k)
        drawn.update(log_q=log_q.detach(), energy_values=energy_values.detach())
        beta = annealed_beta(step, num_steps=anneal_steps) if anneal else 1.0
        return free_energy(log_q, energy_values, beta)

    def record(step: int, loss: Tensor, grad_norm: float | None) -> None:
        if step % log_every == 0 or step == num_steps - 1:
            value = float(free_energy(drawn["log_q"], drawn["energy_values"]))
            history.add_free_energy(step, value, optimizer.param_groups[0]["lr"], log_Z)

    return run_steps(model, optimizer, step_loss, history, num_steps, lr, after_step=record,
                     progress=progress, desc="fit")
