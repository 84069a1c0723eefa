"""Encode once: frozen encoders (text models, the embedding cache) run once per stay, shared by every trial."""
