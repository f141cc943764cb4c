"""ESMM reads PaddleRec's Ali-CCP format with the core reader (see recstack/data/aliccp.py)."""

from recstack.data.aliccp import AliCCPReader as RecDataset

__all__ = ["RecDataset"]
