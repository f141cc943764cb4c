"""recstack: a PaddleRec-style recommendation toolkit on PyTorch."""

__version__ = "0.1.0"
