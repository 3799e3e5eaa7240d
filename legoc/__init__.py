"""legoc: a compiler for neural rationales.

Finds the smallest subgraph of a trained PyTorch model that still does one task faithfully and
emits it as a standalone ONNX building block.
"""

__version__ = "0.1.0"
