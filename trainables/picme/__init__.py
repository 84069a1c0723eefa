"""PiCME family (docs/methods.md, "PiCME")."""
from trainables.picme import contrastive, gated, supervised  # noqa: F401  (register picme.*)
