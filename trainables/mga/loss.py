"""Masked Global Alignment: modality dropout and the pre-training loss (docs/methods.md, "MGA").

Notation as in the paper (§3.2): a batch of N stays, modalities m = 1..M, ``present[i, m]``
(after modality dropout), ``ẑ_im`` the unit-normalised embedding of stay i's modality m (its encoder's
output when present, the learned missing token t_m when not), τ a learnable temperature (stored
as log τ, τ₀ = 0.07), ``n_i = Σ_m present[i, m]``.

- complementary centroid ``c_i^{¬m} = normalize(Σ_{k≠m} present[i,k] ẑ_ik)``, defined when stay i
  has a present modality other than m;
- global representation ``g_i = normalize(Σ_k present[i,k] ẑ_ik)``;
- anchors of modality m: ``V_m = {i : present[i,m] and n_i ≥ 2}``;
- target of stay l for modality m: ``c_l^{¬m}`` when defined, else ``g_l`` (only modality m present);
- ``L_m = -1/|V_m| Σ_{i∈V_m} log softmax_l(sim(ẑ_im, target_l^m)/τ)[i]``, the softmax over every
  stay l of the batch (stays with a single modality still serve as negatives);
- ``L`` = the mean of L_m over the modalities with V_m non-empty.

``tokens_in_centroid`` (default off): off, an absent modality enters no centroid, so the missing
tokens get no gradient from L (they are learned only where a head trains them later); on, every
modality enters the centroids, present ones as their encoding and absent ones as their token
(Σ over all k ≠ m / all k, not only the present ones), so each token is pulled toward the centroids
of the stays that lack its modality: the paper's "tokens stand in for absent modalities in the
global representation". Anchors are the same either way.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_TAU = 0.07
DROP_MODES = ("one", "each")


def modality_dropout(present: torch.Tensor, p: float, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time masking of present modalities; never hides a stay's last present modality.

    ``one`` (the paper, App. B.2): per stay, one target modality, chosen uniformly among its present
    ones, is hidden with probability ``p`` (stays with a single modality keep it). Draws: ``rand(N)``
    (hide or not), then ``rand(N, M)`` (the target: the present modality with the highest draw).
    ``each``: every present modality is hidden independently with probability ``p`` (draws
    ``rand(N, M)``); a stay that would lose them all gets back the one with the highest of a second
    ``rand(N, M)`` among its own.
    """
    if mode not in DROP_MODES:
        raise ValueError(f"drop_mode: {mode!r}; expected one of {', '.join(DROP_MODES)}")
    present = present.bool()
    if p <= 0:
        return present
    n, m = present.shape
    if mode == "one":
        hide = torch.rand(n, generator=generator) < p
        scores = torch.rand(n, m, generator=generator).masked_fill(~present, -1.0)
        target = torch.zeros_like(present).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
        hide = hide & (present.sum(dim=1) >= 2)
        return present & ~(target & hide.unsqueeze(1))
    kept = present & ~(torch.rand(n, m, generator=generator) < p)
    lost_all = ~kept.any(dim=1) & present.any(dim=1)
    scores = torch.rand(n, m, generator=generator).masked_fill(~present, -1.0)
    restore = torch.zeros_like(present).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
    return kept | (restore & lost_all.unsqueeze(1))


class MaskedGlobalAlignment(nn.Module):
    """The loss L above; owns log τ. ``forward(z, present)`` with z ``[N, M, d]`` (tokens already in
    the absent slots) and present ``[N, M]`` bool returns ``loss`` (a 0 tensor with a graph when no
    modality has an anchor), ``terms`` ``[M]`` (NaN where V_m is empty) and ``anchors`` ``[M]``."""

    def __init__(self, init_tau: float = INIT_TAU, tokens_in_centroid: bool = False):
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(math.log(init_tau)))
        self.tokens_in_centroid = bool(tokens_in_centroid)

    @property
    def tau(self) -> float:
        return float(self.log_tau.detach().exp())

    def forward(self, z: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        if z.ndim != 3 or present.shape != z.shape[:2]:
            raise ValueError(f"masked global alignment: z must be [N, M, d] and present [N, M]; got {tuple(z.shape)} and {tuple(present.shape)}")
        present = present.bool()
        zhat = F.normalize(z, dim=-1)
        weight = torch.ones_like(present, dtype=zhat.dtype) if self.tokens_in_centroid else present.to(zhat.dtype)
        total = (weight.unsqueeze(-1) * zhat).sum(dim=1)                      # [N, d]
        g = F.normalize(total, dim=-1)
        n_present = present.sum(dim=1)
        terms, anchors = [], []
        for m in range(z.shape[1]):
            others = (weight.sum(dim=1) - weight[:, m]) > 0                    # c^{¬m} defined
            centroid = F.normalize(total - weight[:, m : m + 1] * zhat[:, m], dim=-1)
            target = torch.where(others.unsqueeze(1), centroid, g)            # [N, d]
            valid = present[:, m] & (n_present >= 2)
            anchors.append(int(valid.sum()))
            if not valid.any():
                terms.append(zhat.new_tensor(float("nan")))
                continue
            logits = zhat[valid, m] @ target.T / self.log_tau.exp()          # [|V_m|, N]
            terms.append(F.cross_entropy(logits, torch.nonzero(valid).flatten()))
        terms = torch.stack(terms)
        used = ~torch.isnan(terms)
        loss = terms[used].mean() if used.any() else (zhat.sum() + self.log_tau) * 0.0
        return {"loss": loss, "terms": terms, "anchors": torch.tensor(anchors)}
