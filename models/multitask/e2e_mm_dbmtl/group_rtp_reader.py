"""E2E_MM_DBMTL reads EasyRec's GroupRTPInput (one line per item group: labels and per-sample features of
``group_size`` impressions, the item's image path, the group size) with the core grouped reader (see
recstack/easyrec/group_rtp.py): ``runner.train_batch_size`` counts groups (images); a batch holds the images
``img`` (n, H, W, 3), the samples' labels and ``all`` features (N rows) and ``sample_num`` (each sample's
group)."""

from recstack.easyrec.group_rtp import GroupRTPReader as RecDataset

__all__ = ["RecDataset"]
