"""PiCME's contrastive pre-training losses (docs/methods.md, "PiCME").

- ``info_nce``: symmetric pairwise InfoNCE for a subset of exactly two modalities.
- ``ovo_terms``: the One-vs-Others terms L_i for a subset of three or more modalities.
- ``ContrastiveLoss``: the module a pre-training run optimises; it owns the learnable temperature
  (stored as log τ, τ₀ = 0.07) and the modality weights w (λ = softmax(w), weighted OvO).

Every loss expects *complete rows*: row k of every embedding tensor is the same stay, and every
stay has every modality of the subset. Callers select those stays before calling (a missing
modality has no embedding to contrast, and a filler vector would be a fake positive pair).
Similarity is cosine similarity; the positives of row k are the other view(s) of stay k and the
negatives are the other stays in the batch, so each direction is a cross-entropy over the
N×N similarity logits with target k for row k.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_TAU = 0.07


def _check_complete_rows(embeddings: list[torch.Tensor]) -> None:
    shapes = {tuple(x.shape) for x in embeddings}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(
            f"contrastive loss: expected one [N, d] tensor per modality, all the same shape (row k = stay k, "
            f"complete rows only), got shapes {[tuple(x.shape) for x in embeddings]}; drop stays missing a "
            f"modality of the subset before calling"
        )


def directional_nce(queries: torch.Tensor, keys: torch.Tensor, log_tau: torch.Tensor, intra: bool = False) -> torch.Tensor:
    """One direction of InfoNCE: -1/N Σ_k log softmax_m(sim(q_k, key_m)/τ)[k].

    ``queries`` and ``keys`` are [N, d]; row k of each is stay k (its positive pair). With
    ``intra``, the other stays' *queries* join the negatives too (SimCLR's NT-Xent form): the softmax
    runs over the N keys and the N − 1 other queries, so a query must be nearer its own stay's view
    than the other stays' embeddings of its own modality (what pooled top-k alignment asks).
    """
    q, k = F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)
    logits = q @ k.T / log_tau.exp()
    if intra:
        same = (q @ q.T / log_tau.exp()).masked_fill(torch.eye(len(q), dtype=torch.bool, device=q.device), float("-inf"))
        logits = torch.cat([logits, same], dim=1)
    targets = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(logits, targets)


def info_nce(a: torch.Tensor, b: torch.Tensor, log_tau: torch.Tensor) -> torch.Tensor:
    """Symmetric pairwise InfoNCE, L = L_pair(a→b) + L_pair(b→a) (a sum, not a mean, as in §1)."""
    _check_complete_rows([a, b])
    return directional_nce(a, b, log_tau) + directional_nce(b, a, log_tau)


def ovo_terms(embeddings: list[torch.Tensor], log_tau: torch.Tensor, intra: bool = False) -> torch.Tensor:
    """The One-vs-Others terms [L_1, ..., L_M] for M ≥ 3 modalities.

    L_i contrasts modality i of stay k against xbar_k^{¬i}, the plain mean of the *other* modalities'
    embeddings of stay k (averaged as given, then cosine-normalised inside the similarity).
    """
    if len(embeddings) < 3:
        raise ValueError(f"ovo_terms: One-vs-Others needs at least 3 modalities, got {len(embeddings)}; use info_nce for 2")
    _check_complete_rows(embeddings)
    stacked = torch.stack(embeddings)  # [M, N, d]
    n_modalities = stacked.shape[0]
    # Mean of the others = (sum of all − self) / (M − 1): one pass instead of M slices.
    others = (stacked.sum(dim=0, keepdim=True) - stacked) / (n_modalities - 1)
    return torch.stack([directional_nce(stacked[i], others[i], log_tau, intra) for i in range(n_modalities)])


class ContrastiveLoss(nn.Module):
    """PiCME's pre-training objective for one modality subset of size M ≥ 2 (docs/methods.md, "PiCME").

    - M == 2: symmetric InfoNCE; ``terms`` holds the two directions [L(1→2), L(2→1)] and ``loss`` is
      their sum. ``w`` exists for a uniform interface but is unused, so ``lam`` stays uniform (½, ½).
    - M ≥ 3: weighted OvO, ``loss = Σ_i softmax(w)_i L_i``; ``terms`` holds the L_i.
      Convention: "plain OvO" is the *mean* (1/M) Σ_i L_i, so weighted OvO at its initial w = 0
      (uniform λ) equals plain OvO exactly.

    ``lam`` is softmax(w), detached: the value to log each epoch and hand to a later mLSTM stage.
    ``terms`` keeps its graph (so ``terms.mean()`` can be optimised as plain OvO); detach to log it.
    Inputs must be complete rows (see the module docstring).
    """

    def __init__(self, n_modalities: int, init_tau: float = INIT_TAU, intra_negatives: bool = False):
        super().__init__()
        self.intra = bool(intra_negatives)
        if n_modalities < 2:
            raise ValueError(f"ContrastiveLoss: a contrastive subset needs at least 2 modalities, got {n_modalities}")
        self.n_modalities = n_modalities
        self.log_tau = nn.Parameter(torch.tensor(math.log(init_tau)))
        self.w = nn.Parameter(torch.zeros(n_modalities))

    @property
    def tau(self) -> float:
        return float(self.log_tau.detach().exp())

    def forward(self, embeddings: list[torch.Tensor], intra: bool | None = None) -> dict[str, torch.Tensor]:
        """``intra`` overrides ``intra_negatives`` for this call (e.g. cross-modal terms only)."""
        intra = self.intra if intra is None else intra
        if len(embeddings) != self.n_modalities:
            raise ValueError(
                f"ContrastiveLoss: built for {self.n_modalities} modalities, got {len(embeddings)} embedding tensors"
            )
        _check_complete_rows(embeddings)
        lam = torch.softmax(self.w, dim=0)
        if self.n_modalities == 2:
            a, b = embeddings
            terms = torch.stack([directional_nce(a, b, self.log_tau, intra), directional_nce(b, a, self.log_tau, intra)])
            loss = terms.sum()
        else:
            terms = ovo_terms(embeddings, self.log_tau, intra)
            loss = (lam * terms).sum()
        return {"loss": loss, "terms": terms, "lam": lam.detach()}
