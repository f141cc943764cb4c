"""ESCM² reads PaddleRec's Ali-CCP format (as ESMM) with the core reader (see recstack/data/aliccp.py)."""

from recstack.data.aliccp import AliCCPReader as RecDataset

__all__ = ["RecDataset"]
