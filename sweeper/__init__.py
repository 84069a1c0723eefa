"""sweeper: a Ray-distributed sweep engine for multimodal clinical prediction."""

__version__ = "0.1.0"
