"""NICE: additive coupling layers (Dinh, Krueger & Bengio, 2014), the flow that Rezende &
Mohamed compare planar flows with in Figure 3.

A coupling layer splits z into two halves (z_a, z_b) and shifts one half by a function of the
other (Dinh et al., Eq. 5-6, additive coupling):

    z_a' = z_a + m(z_b),   z_b' = z_b,

with m a small MLP. Its Jacobian is triangular with ones on the diagonal, so every coupling
layer preserves volume (log|det| = 0) and inverts exactly by subtraction,
z_a = z_a' - m(z_b'). Consecutive layers alternate which half is shifted. A final diagonal
scaling z -> exp(s) * z (Dinh et al., Sec. 3.3) is the only part that changes volume:
log|det| = sum_i s_i for every point.

Shapes: points ``z`` of shape (..., D); the first half is z[..., :D // 2], the second the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import NormalizingFlow, _check_count, _check_point

__all__ = ["ShiftMLP", "NICEFlow", "make_nice_flow"]


class ShiftMLP(nn.Module):
    """The MLP m of one coupling layer: ``num_hidden_layers`` tanh layers of ``hidden`` units,
    then a linear output, m(x) = W_L tanh(... tanh(x W_1 + c_1) ...) + c_L.

    Weights are stored as (in, out) and applied with one ``addmm`` each (cheaper per call than
    a stack of ``nn.Linear`` modules, which matters for 2-D flows of many small layers). The
    output layer starts at zero, so a fresh coupling layer is the identity map; the hidden
    layers start like ``nn.Linear`` (uniform in +-1/sqrt(in)).

    Args:
        in_features, out_features: sizes of the kept and the shifted half.
        hidden: units per hidden layer. num_hidden_layers: number of tanh layers (>= 1).
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 16,
                 num_hidden_layers: int = 2):
        super().__init__()
        if num_hidden_layers < 1:
            raise ValueError(f"need num_hidden_layers >= 1; got {num_hidden_layers}")
        sizes = [in_features] + [hidden] * num_hidden_layers + [out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / n_in**0.5 if index < num_hidden_layers else 0.0
            self.weights.append(nn.Parameter(torch.empty(n_in, n_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_out).uniform_(-bound, bound)))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> m(x) (..., out_features)."""
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1])
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.addmm(bias, h, weight)
            if index < last:
                h = torch.tanh(h)
        return h.reshape(*lead, h.shape[-1])


class NICEFlow(nn.Module):
    """K additive coupling layers, alternating halves, then a diagonal scaling exp(s).

    ``forward(z_0)`` returns (z_K, sum of log|det|) with sum log|det| = sum_i s_i for every
    point (the coupling layers preserve volume), so it plugs into ``NormalizingFlow``
    like a planar or radial stack.

    Args:
        dim: D (>= 2). flow_length: K coupling layers (K = 0: the scaling alone).
        hidden: units per hidden layer of each MLP. num_hidden_layers: hidden layers per MLP.
    """

    def __init__(self, dim: int, flow_length: int, hidden: int = 16,
                 num_hidden_layers: int = 2):
        super().__init__()
        self.dim = dim = _check_count(dim, "dim", 2, "the dimension D; NICE splits z in halves")
        self.flow_length = _check_count(flow_length, "flow_length", 0, "the flow length K")
        self.hidden = hidden
        first, second = dim // 2, dim - dim // 2
        # layer k shifts the first half when k is even, the second when k is odd
        self.shifts = nn.ModuleList(
            ShiftMLP(second if k % 2 == 0 else first, first if k % 2 == 0 else second,
                     hidden, num_hidden_layers)
            for k in range(flow_length))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def _couplings(self, z: Tensor, keep_layers: bool) -> list[Tensor]:
        """Layer k shifts one half by m_k of the other (Dinh et al., Eq. 5): the first half,
        z_a' = z_a + m_k(z_b), when k is even, the second when k is odd. The two halves travel
        as separate tensors: no copy of z per layer."""
        first, second = z[..., : self.dim // 2], z[..., self.dim // 2:]
        out = [z]
        for k, shift in enumerate(self.shifts):
            if k % 2 == 0:
                first = first + shift(second)
            else:
                second = second + shift(first)
            if keep_layers:
                out.append(torch.cat([first, second], -1))
        if not keep_layers:
            out.append(torch.cat([first, second], -1))
        return out

    def layers(self, z: Tensor) -> list[Tensor]:
        """[z_0, z_1, ..., z_K, z_K scaled]: after each coupling layer, then the scaling."""
        _check_point(z, "z", self.dim)
        out = self._couplings(z, keep_layers=True)
        out.append(out[-1] * torch.exp(self.log_scale))
        return out

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z_0 (..., D) -> (z_K (..., D), log|det| = sum_i s_i, shape (...))."""
        _check_point(z, "z", self.dim)
        z_k = self._couplings(z, keep_layers=False)[-1] * torch.exp(self.log_scale)
        return z_k, self.log_scale.sum().expand(z.shape[:-1])

    def inverse(self, z_k: Tensor) -> tuple[Tensor, Tensor]:
        """z_K (..., D) -> (z_0, sum of log|det| along the way), exact: undo the scaling, then
        subtract the shifts from the last layer to the first."""
        _check_point(z_k, "z_k", self.dim)
        z = z_k * torch.exp(-self.log_scale)
        first, second = z[..., : self.dim // 2], z[..., self.dim // 2:]
        for k in reversed(range(self.flow_length)):  # z_a = z_a' - m_k(z_b')
            if k % 2 == 0:
                first = first - self.shifts[k](second)
            else:
                second = second - self.shifts[k](first)
        return torch.cat([first, second], -1), self.log_scale.sum().expand(z_k.shape[:-1])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, flow_length={self.flow_length}, hidden={self.hidden}"


def make_nice_flow(dim: int, flow_length: int, hidden: int = 16,
                   num_hidden_layers: int = 2) -> NormalizingFlow:
    """A ``NormalizingFlow``: learnable Gaussian base, then a ``NICEFlow`` of K coupling layers."""
    return NormalizingFlow(dim, NICEFlow(dim, flow_length, hidden, num_hidden_layers))
