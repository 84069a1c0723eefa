"""Spec and plan: the typed experiment spec, its cells and what a sweep will cost."""
