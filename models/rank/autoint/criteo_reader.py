"""AutoInt reads both of PaddleRec's Criteo layouts with the core reader (see recstack/data/slot.py): the slot format
(config.yaml's keys), or PaddleRec's AutoInt id/value layout when the config has ``num_field`` (its keys
``feature_number``, ``embedding_dim``, ``num_field``)."""

from recstack.data.slot import CriteoReader as RecDataset

__all__ = ["RecDataset"]
