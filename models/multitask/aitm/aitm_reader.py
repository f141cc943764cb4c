"""AITM reads PaddleRec's AITM CSV with the core reader (see recstack/data/aitm.py)."""

from recstack.data.aitm import AITMReader as RecDataset

__all__ = ["RecDataset"]
