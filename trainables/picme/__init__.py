"""PiCME family (paper 000_3fa7bb705ac3a9f3, METHODS.md §1)."""
from trainables.picme import supervised  # noqa: F401  (registers picme.supervised)
