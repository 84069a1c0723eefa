"""PiCME family (paper 000_3fa7bb705ac3a9f3, METHODS.md §1)."""
from trainables.picme import contrastive, gated, supervised  # noqa: F401  (register picme.*)
