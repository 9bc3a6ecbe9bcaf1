"""hdee: heterogeneous domain-expert ensembles of language models."""

__version__ = "0.1.0"
