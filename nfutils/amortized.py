"""Amortized (conditional) planar flows: one network maps a condition to a whole flow.

``training.fit_flow`` fits one flow per target by running an optimizer. For a *family* of targets
p(z | c) ∝ exp(-U(z; c)) (here U1's ring rotated by an angle theta, and optionally scaled to
a radius r) that costs one optimization per member. Amortization (the idea behind the
inference networks of Section 4 of Rezende & Mohamed, 2015, and of VAEs) trains instead a
single network

    g_phi : features(c) -> (mu, log_sigma, w_1..K, u_1..K, b_1..K)

that outputs every parameter of a planar flow q_phi(z | c): a diagonal Gaussian base
N(mu, diag(sigma^2)) followed by K planar layers (Eq. 10; u made invertible by App. A.1).
It is trained by the free energy of Eq. (15) averaged over random conditions,

    F(phi) = E_{c ~ p(c)} E_{z ~ q_phi(.|c)} [log q_phi(z | c) + U(z; c)],

and afterwards one forward pass of g_phi replaces a whole optimization. The price is the
*amortization gap*: KL(q_phi(.|c) || p(.|c)) can only be larger than the KL of the best flow
of the same family fitted to that c alone.

The condition enters through a feature map of ``conditions`` (by default the angle as
(cos theta, sin theta), ``conditions.angle_features``).

Shapes: a batch of B conditions is ``condition`` (B, C); samples come as (B, n, D) with log q
of shape (B, n); per-example flow parameters have shape (B, K, D) / (B, K), exactly what
``flows.planar_flow`` accepts.
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from . import gaussian_flow
from .checkpoints import CheckpointError, check_writable, load_checkpoint
from .conditions import FEATURES, ConditionalEnergy, as_condition
from .conditions import ring_energy  # noqa: F401  (the family of targets, as the notebooks use it)
from .flows import NormalizingFlow, PlanarFlow, planar_param_count, split_planar_params
from .training import Checkpoint, History, check_positive, run_steps, warmup_cosine

__all__ = ["FlowParams", "AmortizedPlanarFlow", "SCHEDULES", "schedule_factor", "CHECKPOINT_KEYS",
           "load_amortized", "fit_amortized"]

# --------------------------------------------------------------------------- the amortizer


class FlowParams(NamedTuple):
    """All parameters of one planar flow per condition: base ``mu`` and ``log_sigma`` (B, D);
    ``w``, ``u`` (B, K, D) (u unconstrained; App. A.1 is applied in the flow); ``b`` (B, K)."""

    mu: Tensor
    log_sigma: Tensor
    w: Tensor
    u: Tensor
    b: Tensor


class AmortizedPlanarFlow(nn.Module):
    """q_phi(z | c): an MLP maps features(c) to a Gaussian base and K planar layers.

    The network: features (F) -> [Linear, tanh] x ``num_hidden_layers`` (width ``hidden``) ->
    Linear to 2D + K(2D + 1) numbers, split into (mu, log_sigma) and ``split_planar_params``'
    (w, u, b). Its output layer starts with small weights and a bias equal to the
    initialization of ``flows.PlanarFlow`` (mu = 0, sigma = 1, w ~ N(0, 1/D), u ~ 0.01 N(0, 1),
    b = 0), so training starts from a near-identity flow for every condition.

    Args:
        dim: D (2 for the rings of ``conditions``).
        flow_length: K, the number of planar layers.
        features: a key of ``FEATURES`` ("angle", "angle_radius" or "raw_angle").
        hidden: width of the hidden layers. num_hidden_layers: how many (>= 1).
        out_init_scale: multiplies the default init of the output layer's weights.
    """

    def __init__(self, dim: int = 2, flow_length: int = 16, features: str = "angle",
                 hidden: int = 64, num_hidden_layers: int = 2, out_init_scale: float = 0.1):
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"features must be one of {sorted(FEATURES)}, got {features!r}")
        if dim < 1 or flow_length < 0 or hidden < 1 or num_hidden_layers < 1:
            raise ValueError(
                "need dim >= 1, flow_length >= 0, hidden >= 1, num_hidden_layers >= 1; got "
                f"{dim}, {flow_length}, {hidden}, {num_hidden_layers}")
        self.dim = dim
        self.flow_length = flow_length
        self.featurize, self.condition_dim, num_features = FEATURES[features]
        self.config = dict(dim=dim, flow_length=flow_length, features=features, hidden=hidden,
                           num_hidden_layers=num_hidden_layers, out_init_scale=out_init_scale)
        layers: list[nn.Module] = []
        width_in = num_features
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width_in, hidden), nn.Tanh()]
            width_in = hidden
        self.body = nn.Sequential(*layers)
        self.num_outputs = 2 * dim + planar_param_count(dim, flow_length)
        self.head = nn.Linear(hidden, self.num_outputs)
        with torch.no_grad():
            self.head.weight.mul_(out_init_scale)
            init = PlanarFlow(dim, flow_length)  # the per-target flow's initialization
            bias = torch.cat([torch.zeros(2 * dim), init.w.reshape(-1), init.u.reshape(-1), init.b])
            self.head.bias.copy_(bias)

    def flow_params(self, condition: Tensor) -> FlowParams:
        """g_phi(c): every parameter of the flow for each condition.

        Args:
            condition: shape (B, C) (or (B,) when C = 1).

        Returns:
            ``FlowParams`` with mu, log_sigma (B, D); w, u (B, K, D); b (B, K).
        """
        condition = as_condition(condition, self.condition_dim)
        out = self.head(self.body(self.featurize(condition)))
        mu, log_sigma, flat = torch.split(out, [self.dim, self.dim, out.shape[-1] - 2 * self.dim], -1)
        w, u, b = split_planar_params(flat, self.dim, self.flow_length)
        return FlowParams(mu, log_sigma, w, u, b)

    def rsample(self, condition: Tensor, num_samples: int,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw n samples from q_phi(. | c) for each of B conditions, reparameterized.

        z_0 = mu + sigma * eps, z_K = f_K o ... o f_1(z_0) with the condition's own layers,
        log q(z_K | c) = log N(z_0; mu, sigma^2) - sum_k log|det df_k/dz_{k-1}|  (Eq. 13).

        Args:
            condition: (B, C) (or (B,) when C = 1).
            num_samples: n samples per condition.
            generator: random numbers of eps.

        Returns:
            (z_K (B, n, D), log_q (B, n)), differentiable in the network's parameters.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        params = self.flow_params(condition)
        batch = params.mu.shape[0]
        eps = torch.randn(batch, num_samples, self.dim, generator=generator,
                          device=params.mu.device, dtype=params.mu.dtype)
        flow_params = (None if self.flow_length == 0 else  # (B, 1, ...): broadcast over the n samples
                       (params.w.unsqueeze(1), params.u.unsqueeze(1), params.b.unsqueeze(1)))
        return gaussian_flow.sample(params.mu.unsqueeze(1), params.log_sigma.unsqueeze(1),
                                    flow_params, eps)

    def log_prob(self, z_k: Tensor, condition: Tensor) -> Tensor:
        """Exact log q_phi(z_K | c) at arbitrary points, by inverting the flow layer by layer
        (``flows.planar_flow_inverse``: w^T u_hat > -1 makes each layer a monotone scalar
        equation along w), then log q = log N(z_0; mu, sigma^2) - sum_k log|det_k|  (Eq. 13).

        Args:
            z_k: points, shape (B, m, D): m points for each of B conditions.
            condition: (B, C).

        Returns:
            log q, shape (B, m).
        """
        if z_k.dim() != 3 or z_k.shape[-1] != self.dim:
            raise ValueError(f"z_k must have shape (B, m, {self.dim}); received {tuple(z_k.shape)}")
        params = self.flow_params(condition)
        if params.mu.shape[0] != z_k.shape[0]:
            raise ValueError(
                f"z_k has {z_k.shape[0]} rows but condition has {params.mu.shape[0]}; expected "
                "one row of points per condition")
        # the condition's parameters (B, 1, K, D) and (B, 1, K), broadcast over the m points
        flow_params = (params.w.unsqueeze(1), params.u.unsqueeze(1), params.b.unsqueeze(1))
        return gaussian_flow.log_prob(z_k, params.mu.unsqueeze(1), params.log_sigma.unsqueeze(1),
                                      flow_params)

    def to_flow(self, condition: Tensor) -> NormalizingFlow:
        """The flow for one condition as a stand-alone ``flows.NormalizingFlow`` (a copy of
        g_phi(c), detached): handy to compare with, or to fine-tune from, a per-target flow.

        Args:
            condition: shape (C,) or (1, C) (or a 0-d angle when C = 1).
        """
        condition = torch.as_tensor(condition, dtype=self.head.weight.dtype,
                                    device=self.head.weight.device).reshape(1, -1)
        with torch.no_grad():
            params = self.flow_params(condition)
        flow = NormalizingFlow(self.dim, PlanarFlow(self.dim, self.flow_length)
                               if self.flow_length > 0 else None)
        flow = flow.to(device=params.mu.device, dtype=params.mu.dtype)
        with torch.no_grad():
            flow.mu.copy_(params.mu[0])
            flow.log_sigma.copy_(params.log_sigma[0])
            if self.flow_length > 0:
                flow.flow.w.copy_(params.w[0])
                flow.flow.u.copy_(params.u[0])
                flow.flow.b.copy_(params.b[0])
        return flow


# --------------------------------------------------------------------------- training


#: The learning-rate schedules of ``fit_amortized``, as multipliers of the peak lr.
SCHEDULES = ("cosine", "constant")


def schedule_factor(schedule: str, num_steps: int, warmup_fraction: float = 0.05,
                    final_fraction: float = 0.01) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at step t, for ``fit_amortized``.

    * ``"cosine"``: ``training.warmup_cosine`` with a linear warm-up over ``warmup_fraction``
      of the steps, then a cosine decay to ``final_fraction`` of the peak:
      m(t) = f + (1 - f)(1 + cos(pi s)) / 2, s in [0, 1] the fraction of the decay done.
    * ``"constant"``: 1 throughout (what ``training.fit_flow`` does).

    Warm-up keeps the first steps, whose gradients are the largest, small; the decay lets the
    parameters settle instead of rattling around at a fixed step size.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if schedule == "constant":
        return lambda step: 1.0
    if schedule != "cosine":
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    warmup = min(max(1, int(round(warmup_fraction * num_steps))), num_steps - 1)
    return lambda step: warmup_cosine(step, num_steps, warmup, final_fraction)


#: What a checkpoint of ``fit_amortized`` holds (checked by ``checkpoints.load_checkpoint``).
CHECKPOINT_KEYS = ("run_config", "model", "optimizer", "history", "step")


def load_amortized(path: str | os.PathLike, device: str | torch.device | None = None
                   ) -> tuple[AmortizedPlanarFlow, dict]:
    """Rebuild the amortizer saved by ``fit_amortized`` at ``path``.

    Returns:
        (model, checkpoint dict) with the model in eval mode on ``device`` (default CPU); the
        dict's ``"history"`` reads back with ``training.History.from_dict``.

    Raises:
        FileNotFoundError, CheckpointError: see ``checkpoints.load_checkpoint``; also a
            CheckpointError when the configuration names arguments the amortizer does not take,
            or the weights do not match it.
    """
    state = load_checkpoint(path, required=CHECKPOINT_KEYS)
    try:
        model = AmortizedPlanarFlow(**state["run_config"]["model"])
        model.load_state_dict(state["model"])
    except (TypeError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path} does not match its run_config: {error}") from error
    return model.to(device or "cpu").eval(), state


def fit_amortized(model: AmortizedPlanarFlow, energy: ConditionalEnergy,
                  sample_conditions: Callable[[int, torch.Generator | None], Tensor],
                  num_steps: int = 10_000, conditions_per_step: int = 32,
                  samples_per_condition: int = 64, lr: float = 3e-3, schedule: str = "cosine",
                  log_Z: float | Callable[[Tensor], Tensor] | None = None,
                  clip_grad_norm: float | None = 100.0, log_every: int = 100,
                  progress: bool = False, generator: torch.Generator | None = None,
                  checkpoint_path: str | os.PathLike | None = None, checkpoint_every: int = 1000
                  ) -> History:
    """Train an amortizer by the free energy averaged over random conditions (Eq. 15):

        F(phi) = (1 / B n) sum_b sum_i [log q_phi(z_bi | c_b) + U(z_bi; c_b)],
        c_b ~ p(c), z_bi ~ q_phi(. | c_b),

    with Adam and a learning-rate schedule (``schedule_factor``), in the series' one loop
    (``training.run_steps``). For each c, E_q[log q + U] = KL(q(.|c) || p(.|c)) - log Z(c), so
    F + E_c[log Z(c)] is the mean KL in nats.

    Args:
        model: the ``AmortizedPlanarFlow`` (trained in place).
        energy: U(z; c), (B, n, D) and (B, C) -> (B, n) (e.g. ``ring_energy``).
        sample_conditions: (B, generator) -> fresh conditions (B, C) each step.
        num_steps: optimizer steps. conditions_per_step: B. samples_per_condition: n.
        lr: peak learning rate. schedule: "cosine" or "constant".
        log_Z: log Z, a float or a function of the conditions (B, C) -> (B,); when given,
            the history holds KL in nats.
        clip_grad_norm: clip the gradient's norm (None: no clipping).
        log_every: record every this many steps (and the last step).
        progress: show a tqdm bar.
        generator: random numbers of conditions and samples (reproducible runs).
        checkpoint_path: when given, model, optimizer, generator state and history are
            written there (``checkpoints.save_checkpoint``: atomic, with a checksum) every
            ``checkpoint_every`` steps and at the end; a run that finds a checkpoint there
            resumes from it (or loads it, when finished). It must have been made with the same
            configuration (model, num_steps, conditions_per_step, samples_per_condition, lr,
            schedule).

    Returns:
        ``training.History`` with ``steps``, ``free_energy``, ``lr``, ``kl`` (with ``log_Z``),
        ``seconds``, ``resumed_from`` ([s] after a resume from step s) and ``finished``.

    Raises:
        NonFiniteLossError: if a loss is NaN or infinite (training stops; see
            ``training.check_finite_loss``).
        ValueError: a count below 1, an unknown schedule, an unwritable ``checkpoint_path``,
            or a checkpoint there made with another configuration.
        CheckpointError: the checkpoint is truncated or corrupt.
    """
    check_positive(num_steps=num_steps, conditions_per_step=conditions_per_step,
                   samples_per_condition=samples_per_condition, log_every=log_every,
                   checkpoint_every=checkpoint_every)
    lr_factor = schedule_factor(schedule, num_steps)
    if checkpoint_path is not None:
        check_writable(checkpoint_path)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = History()
    run_config = dict(model=dict(model.config), num_steps=num_steps,
                      conditions_per_step=conditions_per_step,
                      samples_per_condition=samples_per_condition, lr=lr, schedule=schedule)
    drawn = {}  # the conditions of the current step, for the record

    def step_loss(step: int) -> Tensor:
        condition = sample_conditions(conditions_per_step, generator)
        z_k, log_q = model.rsample(condition, samples_per_condition, generator=generator)
        drawn["condition"] = condition
        return (log_q + energy(z_k, condition)).mean()

    def record(step: int, loss: Tensor, grad_norm: float | None) -> None:
        if step % log_every == 0 or step == num_steps - 1:
            mean_log_Z = (None if log_Z is None else float(log_Z) if isinstance(log_Z, (int, float))
                          else float(log_Z(drawn["condition"]).mean()))
            history.add_free_energy(step, float(loss), optimizer.param_groups[0]["lr"], mean_log_Z)

    checkpoint = None if checkpoint_path is None else Checkpoint(
        checkpoint_path, generator, extra=lambda done: {"run_config": run_config},
        check=lambda state: _check_same_run(state, checkpoint_path, run_config),
        required=CHECKPOINT_KEYS)
    return run_steps(model, optimizer, step_loss, history, num_steps, lr, lr_factor=lr_factor,
                     max_grad_norm=clip_grad_norm, after_step=record, checkpoint=checkpoint,
                     checkpoint_every=checkpoint_every, progress=progress, desc="amortized fit")


def _check_same_run(state: dict, path: str | os.PathLike, run_config: dict) -> None:
    """Refuse a checkpoint made with another configuration (it would be another run)."""
    saved = state["run_config"]
    if saved != run_config:
        differing = sorted(key for key in set(saved) | set(run_config)
                           if saved.get(key) != run_config.get(key))
        raise ValueError(f"checkpoint {path} was made with another configuration (differs in "
                         f"{differing}: expected {[saved.get(key) for key in differing]}, received "
                         f"{[run_config.get(key) for key in differing]}); delete it to train "
                         "anew, or pass another checkpoint_path")
