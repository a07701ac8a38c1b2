"""SIFThinker: train, evaluate and serve spatially-aware reasoning VLMs (SIF traces)."""

__version__ = "0.1.0"
