"""FinalMLP reads PaddleRec's Criteo slot format with the core reader (see recstack/data/slot.py)."""

from recstack.data.slot import SlotReader as RecDataset

__all__ = ["RecDataset"]
