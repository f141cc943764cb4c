"""Share-Bottom reads PaddleRec's census format with the core reader (see recstack/data/csv.py)."""

from recstack.data.csv import CensusReader as RecDataset

__all__ = ["RecDataset"]
