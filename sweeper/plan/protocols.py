"""The spec's missing-modality protocols (``final.test_missing``) and the ``train_drop`` axis's values."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from sweeper.data.corrupt import EACH
from sweeper.data.schema import MODALITIES

SetName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")]
"""An extra test set's name (``data.external``, ``final.test_missing``): it names columns and files."""


def check_drop(value: str) -> str:
    """A modality's name or ``each``; raises ValueError naming the known ones."""
    if value != EACH and value not in MODALITIES:
        raise ValueError(f"drop {value!r}: give a modality ({', '.join(MODALITIES)}) or {EACH!r}")
    return value


class MissingProtocol(BaseModel):
    """One named, seeded test-time corruption set of the test split (``sweeper.data.corrupt``)."""

    model_config = ConfigDict(extra="forbid")
    drop: str = Field(description=f"the modality to hide, or {EACH!r}: hide each modality independently (Bernoulli)")
    rate: float = Field(ge=0, le=1, description="probability of hiding it (never a stay's last present modality)")
    seed: int = Field(0, ge=0, description="which stays: the draw depends only on seed, stay id and modality")

    @field_validator("drop")
    @classmethod
    def _drop(cls, value):
        return check_drop(value)
