"""Per-modality encoders shared by every method family; each maps its modality to ``d`` dims.

CPU-sized defaults (docs/methods.md, "Encoders"): for notes an MLP over the frozen
``text_encoder``'s cached embeddings (default all-MiniLM-L6-v2; ``bag``: hashed bag-of-words), or,
with ``text_lora_r`` > 0, the HF model itself with LoRA adapters trained in the trial;
a small ResNet for 1-channel images, an LSTM over hourly bins with mask channels, an MLP for
demographics. Input shapes come from ``sweeper.data.loading.StaysCollate.input_shapes``.
"""
from __future__ import annotations

import torch
from torch import nn

from sweeper.encode.text import lora_rank


class TextBagEncoder(nn.Module):
    """Hashed bag-of-words (uni+bigrams) → MLP, trained from scratch."""

    def __init__(self, n_features: int, d: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out))
            if stride != 1 or channels_in != channels_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


class SmallResNet(nn.Module):
    """A ResNet-style CNN on 1-channel images: stem, residual stages, global average pool → d."""

    def __init__(self, d: int, width: int = 16, stages: int = 3):
        super().__init__()
        layers = [nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
        for stage in range(stages):
            out = width * 2**stage
            layers.append(_ResidualBlock(channels, out, stride=1 if stage == 0 else 2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(channels, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).mean(dim=(2, 3)))


class TimeseriesLSTM(nn.Module):
    """LSTM over hourly bins (values ‖ mask channels); orthogonal recurrent, Xavier input weights."""

    def __init__(self, n_inputs: int, d: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or d
        self.lstm = nn.LSTM(n_inputs, hidden, batch_first=True)
        for name, weight in self.lstm.named_parameters():
            if "weight_hh" in name:
                nn.init.orthogonal_(weight)
            elif "weight_ih" in name:
                nn.init.xavier_uniform_(weight)
            else:
                nn.init.zeros_(weight)
        self.proj = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.proj(h[-1])


class DemographicsMLP(nn.Module):
    def __init__(self, n_inputs: int, d: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_inputs, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_encoder(modality: str, input_shape: tuple[int, ...], d: int, config: dict) -> nn.Module:
    """The default CPU-sized encoder of ``modality`` for inputs of ``input_shape``."""
    if modality in ("discharge", "radiology"):
        if lora_rank(config):  # raw notes in, the HF model with LoRA adapters trains in the trial
            from sweeper.encode.text import DEFAULT_TEXT_MODEL, HFTextEncoder, lora_from_trial_config

            lora = {**lora_from_trial_config(config), "r": lora_rank(config)}
            return HFTextEncoder(config.get("text_encoder") or DEFAULT_TEXT_MODEL, d, int(config.get("text_max_length", 128)), lora)
        # hashed bag-of-words, or a frozen encoder's cached embeddings (``text_encoder``)
        return TextBagEncoder(input_shape[0], d, dropout=config.get("dropout", 0.1))
    if modality == "cxr":
        return SmallResNet(d, width=config.get("cnn_width", 16))
    if modality == "timeseries":
        return TimeseriesLSTM(input_shape[1], d)
    if modality == "demographics":
        return DemographicsMLP(input_shape[0], d)
    raise ValueError(f"no encoder for modality {modality!r}")
