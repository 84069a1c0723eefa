"""Masked Global Alignment family (docs/methods.md, "MGA")."""
from trainables.mga import pretrain, seq, static  # noqa: F401  (register mga.pretrain, mga.static*, mga.seq*)
