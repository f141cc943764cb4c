"""The retrieval stage: candidate generation from the item and query vectors of a two-tower export."""
