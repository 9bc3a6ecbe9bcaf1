"""hdee: heterogeneous domain-expert ensembles of language models."""

__version__ = "0.1.0"

# an exported ensemble (`hdee export`) loads with AutoModelForCausalLM without remote code
from hdee.export import install_auto_classes as _install_auto_classes

_install_auto_classes()
