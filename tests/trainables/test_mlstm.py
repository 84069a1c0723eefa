"""The Modality-Gated LSTM (METHODS.md §1) against torch.nn.LSTMCell and its λ gating."""
from __future__ import annotations

import pytest
import torch

from trainables.picme.mlstm import ModalityGatedLSTM, ModalityGatedLSTMCell

N, IN, H = 5, 6, 4


def _cell_pair(seed: int = 0) -> tuple[ModalityGatedLSTMCell, torch.nn.LSTMCell]:
    torch.manual_seed(seed)
    ours = ModalityGatedLSTMCell(IN, H).double()
    with torch.no_grad():
        for p in ours.parameters():  # non-zero biases so the bias path is exercised too
            p.normal_(0.0, 0.5)
    reference = torch.nn.LSTMCell(IN, H).double()
    reference.load_state_dict(ours.state_dict())  # same names and shapes as nn.LSTMCell
    return ours, reference


def test_parameter_layout_and_init_match_lstm_cell():
    cell = ModalityGatedLSTMCell(IN, H)
    shapes = {name: tuple(p.shape) for name, p in cell.named_parameters()}
    assert shapes == {name: tuple(p.shape) for name, p in torch.nn.LSTMCell(IN, H).named_parameters()}
    assert torch.all(cell.bias_ih == 0) and torch.all(cell.bias_hh == 0)
    gram = cell.weight_hh.T @ cell.weight_hh  # orthogonal columns
    assert torch.allclose(gram, torch.eye(H), atol=1e-5)


def test_lambda_one_equals_lstm_cell_over_several_steps():
    ours, reference = _cell_pair()
    torch.manual_seed(1)
    state_ours, state_ref = None, None
    for _ in range(6):
        x = torch.randn(N, IN, dtype=torch.float64)
        state_ours = ours(x, state_ours, lam=1.0)
        state_ref = reference(x, state_ref)
        torch.testing.assert_close(state_ours[0], state_ref[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(state_ours[1], state_ref[1], atol=1e-6, rtol=0)


def _forget_gate(cell: ModalityGatedLSTMCell, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    gates = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    return torch.sigmoid(gates.chunk(4, dim=-1)[1])


def test_lambda_zero_writes_nothing_into_the_cell_state():
    cell, _ = _cell_pair()
    torch.manual_seed(2)
    h, c = torch.randn(N, H, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
    for _ in range(4):
        x = torch.randn(N, IN, dtype=torch.float64)
        expected_c = _forget_gate(cell, x, h) * c
        h, c = cell(x, (h, c), lam=0.0)
        torch.testing.assert_close(c, expected_c, atol=1e-12, rtol=0)
    # From a zero state, λ = 0 keeps the cell (and so H) at exactly zero.
    h0, c0 = cell(torch.randn(N, IN, dtype=torch.float64), None, lam=torch.tensor(0.0))
    assert torch.all(c0 == 0) and torch.all(h0 == 0)


def test_per_sample_lambda_broadcasts_over_hidden():
    cell, _ = _cell_pair()
    torch.manual_seed(3)
    x = torch.randn(N, IN, dtype=torch.float64)
    state = (torch.randn(N, H, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64))
    lam = torch.linspace(0.0, 1.0, N, dtype=torch.float64)
    h, c = cell(x, state, lam=lam)
    for k in range(N):
        h_k, c_k = cell(x[k : k + 1], (state[0][k : k + 1], state[1][k : k + 1]), lam=float(lam[k]))
        torch.testing.assert_close(h[k : k + 1], h_k)
        torch.testing.assert_close(c[k : k + 1], c_k)


def test_sequence_module_runs_the_cell_in_order():
    torch.manual_seed(4)
    model = ModalityGatedLSTM(IN, H).double()
    steps = [torch.randn(N, IN, dtype=torch.float64) for _ in range(3)]
    lam = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    state = None
    for t, x in enumerate(steps):
        state = model.cell(x, state, lam=lam[t])
    h_list = model(steps, lam)
    torch.testing.assert_close(h_list, state[0])
    torch.testing.assert_close(model(torch.stack(steps, dim=1), lam), h_list)
    assert h_list.shape == (N, H)
    h_list.sum().backward()
    assert model.cell.weight_ih.grad is not None


def test_sequence_module_rejects_mismatched_lambda():
    model = ModalityGatedLSTM(IN, H)
    with pytest.raises(ValueError, match="one λ per modality"):
        model([torch.randn(N, IN)] * 3, torch.ones(2))
