"""The methods the engine sweeps, registered by name (see ``trainables.registry``)."""
