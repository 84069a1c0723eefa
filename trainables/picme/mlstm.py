"""PiCME's Modality-Gated LSTM (mLSTM; docs/methods.md, "PiCME").

A subset's modality embeddings are read as a sequence, one modality per step in the subset's
canonical order. The cell is a standard LSTM cell except that the new content written to the cell
state is scaled by that step's modality weight λ_{m(t)} (from weighted-OvO pre-training or a fixed
config vector):

    I, F, O = σ(·),  C̃ = tanh(·),   all from W x_t + U H_{t-1} + b
    C_t = F ⊙ C_{t-1} + (I ⊙ C̃) ⊙ λ_{m(t)}
    H_t = O ⊙ tanh(C_t)

With λ = 1 this is exactly ``torch.nn.LSTMCell`` (same parameter names, shapes and gate order
i, f, g, o), which is what the tests check; with λ = 0 a step writes nothing into the cell state.
"""
from __future__ import annotations

import torch
from torch import nn


class ModalityGatedLSTMCell(nn.Module):
    """One mLSTM step; parameters are laid out exactly like ``torch.nn.LSTMCell``.

    Init follows ``trainables.encoders.TimeseriesLSTM``: orthogonal recurrent weights, Xavier input
    weights, zero biases.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight_ih)
        nn.init.orthogonal_(self.weight_hh)
        nn.init.zeros_(self.bias_ih)
        nn.init.zeros_(self.bias_hh)

    def forward(
        self,
        x: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        lam: float | torch.Tensor = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x [N, input_size], state (h, c) each [N, hidden] (zeros when None).

        ``lam`` is this step's modality weight: a float, a 0-d tensor, or a per-sample [N] tensor;
        it is broadcast over the hidden size.
        """
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = gates.chunk(4, dim=-1)  # torch.nn.LSTMCell's order
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
        if lam.dim() == 1:  # per-sample weights [N] → [N, 1]
            lam = lam.unsqueeze(-1)
        c = f * c + (i * g) * lam
        h = o * torch.tanh(c)
        return h, c


class ModalityGatedLSTM(nn.Module):
    """Runs a ``ModalityGatedLSTMCell`` over a subset's modality embeddings; returns the final H."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.cell = ModalityGatedLSTMCell(input_size, hidden_size)

    def forward(self, steps: list[torch.Tensor] | torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """steps: M tensors [N, input_size] (or one [N, M, input_size]) in canonical modality order.

        lam: [M], one weight per step (an [N, M] per-sample matrix also works). Returns h [N, hidden].
        """
        if isinstance(steps, torch.Tensor):
            if steps.dim() != 3:
                raise ValueError(f"ModalityGatedLSTM: a tensor of steps must be [N, M, input_size], got {tuple(steps.shape)}")
            steps = list(steps.unbind(dim=1))
        if len(steps) == 0:
            raise ValueError("ModalityGatedLSTM: got no modality steps; a subset has at least one modality")
        lam = torch.as_tensor(lam, dtype=steps[0].dtype, device=steps[0].device)
        if lam.shape[-1] != len(steps):
            raise ValueError(
                f"ModalityGatedLSTM: lam has {lam.shape[-1]} weights for {len(steps)} modality steps; "
                "give one λ per modality of the subset, in the same canonical order"
            )
        state = None
        for t, x in enumerate(steps):
            state = self.cell(x, state, lam[..., t])
        return state[0]
