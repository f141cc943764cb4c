"""DMR: Deep Match to Rank Model for Personalized Click-Through Rate Prediction.

Ze Lyu, Yu Dong, Chengfu Huo, Weijun Ren. AAAI 2020. Code and paper: https://github.com/lvze92/DMR
(PaddleRec: models/rank/dmr)

Two networks measure how relevant the target ad is to the user, on the behaviours ``e_1 .. e_T`` (category and
brand embeddings, concatenated; ``T = 50``) with their context ``c_t`` (a position embedding and the behaviour
type's embedding):

* user-to-item: ``u_t = PReLU(W_u sum_{j <= t} softmax_j(a(q_j, e_j)) e_j)``, ``q_j`` from the context alone
  (position-aware attention); ``r_u2i = u_T . v'_target``, the inner product with the target category's
  *output-side* embedding. An auxiliary match loss trains ``u . v'`` as a relevance: predict the last behaviour's
  category from the ones before it, ``L_match = -log softmax(u_{T-1} . v'_{c_T})`` over the categories (full, or
  sampled softmax with ``aux_num_sampled`` negatives).
* item-to-item: target attention ``a_t = a(q_t, e_t)``, ``q_t = PReLU(W [v_target, c_t])``; pooled interest
  ``sum_t softmax(a)_t e_t`` and ``r_i2i = sum_t a_t``.

``y = sigmoid(MLP(BN([user, ad, pid, sum_t e_t, v_target * sum_t e_t, r_u2i, r_i2i, interest])))`` and
``loss = BCE(y, click) + aux_loss_weight * L_match``. Layers: :mod:`recstack.layers.relevance`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recstack.layers import MLP, ItemToItemRelevance, UserToItemRelevance, make_embedding, masked_pool, match_loss
from recstack.layers.init import truncated_normal_

#: the user-profile fields embedded with ``other_embedding_size`` (after ``uid``), in the format's order
USER_FIELDS = ("cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level",
               "occupation", "new_user_class_level")


class DMR(nn.Module):
    """Deep Match to Rank on PaddleRec's Alimama features (:mod:`recstack.data.alimama`).

    Tables (PaddleRec's parameter names): ``uid`` (UidSparseFeatFactors), ``adgroup_id`` (Mid), ``cate`` (Cat;
    history and target), ``brand`` (Brand; history and target), ``campaign_id``, ``customer`` with
    ``main_embedding_size``; the user-profile fields, ``pid``, ``btag`` / ``dm_btag`` (behaviour type, for the
    item-to-item and the user-to-item context) and ``position`` / ``dm_position`` with ``other_embedding_size``;
    ``dm_item`` (DmItemSparseFeatFactors), the output-side category table of the user-to-item network
    (``main_embedding_size`` wide, the user representation's width), with a constant zero bias (PaddleRec's and
    the original code's ``dm_item_biases`` are not trained).

    Differences from PaddleRec's ``DMRLayer`` (README): padded behaviours are left out of ``sum_t e_t`` and of
    every attention (PaddleRec sums their id-0 embeddings); the match loss averages over the samples whose
    second-last behaviour ``match_mask`` marks (PaddleRec zeroes the other samples' user vectors but averages over
    all); no PReLU after the output logit.

    Initialisation: every table truncated normal with std ``init_std`` (PaddleRec: uniform in [-1, 1]);
    attention and projection Linears N(0, 1/sqrt(fan_in)), biases 0; output MLP PyTorch's default with PReLU
    slopes 0.1 (PaddleRec's); BatchNorm over the MLP input (PaddleRec's momentum 0.99, epsilon 1e-3).

    Args:
        user_size, cms_segid_size, cms_group_id_size, final_gender_code_size, age_level_size, pvalue_level_size,
            shopping_level_size, occupation_size, new_user_class_level_size: user-profile table rows.
        adgroup_id_size, cate_size, campaign_id_size, customer_size, brand_size: ad table rows.
        btag_size, pid_size: behaviour-type and position (ad slot) table rows.
        main_embedding_size: ``M``, ids' embedding width (behaviours are ``2M`` wide).
        other_embedding_size: ``O``, the profile, context and position embedding width.
        history_length: ``T`` (the format's 50).
        fc_sizes: hidden widths of the output MLP (PaddleRec: ``[512, 256, 128]``).
        attention_sizes: hidden widths of both attention units (PaddleRec: ``[80, 40]``, sigmoid).
        aux_num_sampled: negatives of the sampled softmax of the match loss; 0: full softmax (PaddleRec's).
        init_std: the tables' truncated-normal std.

    Shapes:
        ``btag_his``, ``cate_his``, ``brand_his`` ``(B, T)`` int64, ``mask``, ``match_mask`` ``(B, T)`` float,
        the 9 user fields, 5 ad fields and ``pid`` ``(B, 1)`` int64, ``price`` ``(B, 1)`` float →
        probability ``(B, 1)`` (with ``return_extras``: and ``{"aux_loss": scalar}``).
    """

    def __init__(self, user_size: int, cms_segid_size: int, cms_group_id_size: int, final_gender_code_size: int,
                 age_level_size: int, pvalue_level_size: int, shopping_level_size: int, occupation_size: int,
                 new_user_class_level_size: int, adgroup_id_size: int, cate_size: int, campaign_id_size: int,
                 customer_size: int, brand_size: int, btag_size: int, pid_size: int, main_embedding_size: int = 32,
                 other_embedding_size: int = 8, history_length: int = 50, fc_sizes: Sequence[int] = (512, 256, 128),
                 attention_sizes: Sequence[int] = (80, 40), aux_num_sampled: int = 0, init_std: float = 0.1) -> None:
        super().__init__()
        m, o, t = main_embedding_size, other_embedding_size, history_length
        self.history_length, self.aux_num_sampled = t, aux_num_sampled
        self.uid = make_embedding(user_size, m, init_std)
        profile_sizes = (cms_segid_size, cms_group_id_size, final_gender_code_size, age_level_size,
                         pvalue_level_size, shopping_level_size, occupation_size, new_user_class_level_size)
        self.profile = nn.ModuleList(make_embedding(size, o, init_std) for size in profile_sizes)
        self.adgroup_id = make_embedding(adgroup_id_size, m, init_std)
        self.cate = make_embedding(cate_size, m, init_std)
        self.brand = make_embedding(brand_size, m, init_std)
        self.campaign_id = make_embedding(campaign_id_size, m, init_std)
        self.customer = make_embedding(customer_size, m, init_std)
        self.pid = make_embedding(pid_size, o, init_std)
        self.btag = make_embedding(btag_size, o, init_std)
        self.dm_btag = make_embedding(btag_size, o, init_std)
        # dense tables (read whole or by sampled rows, so not nn.Embedding, whose gradients go row-wise)
        self.position = nn.Parameter(truncated_normal_(torch.empty(t, o), init_std))
        self.dm_position = nn.Parameter(truncated_normal_(torch.empty(t, o), init_std))
        self.dm_item = nn.Parameter(truncated_normal_(torch.empty(cate_size, m), init_std))
        self.register_buffer("dm_item_bias", torch.zeros(cate_size), persistent=False)
        self.user_to_item = UserToItemRelevance(2 * m, 2 * o, m, t, attention_sizes)
        self.item_to_item = ItemToItemRelevance(2 * m, 2 * o, t, attention_sizes)
        # user (uid + 8 profile fields), ad (5 ids + price), pid, sum e_t, v * sum e_t, r_u2i, r_i2i, interest
        width = (m + 8 * o) + (5 * m + 1) + o + 2 * m + 2 * m + 1 + 1 + 2 * m
        self.input_norm = nn.BatchNorm1d(width, momentum=0.01, eps=1e-3)
        self.mlp = MLP(width, list(fc_sizes), output_dim=1, activation="prelu")
        for module in self.mlp.modules():
            if isinstance(module, nn.PReLU):
                nn.init.constant_(module.weight, 0.1)
        self._generator: torch.Generator | None = None

    def _context(self, position: torch.Tensor, btag: nn.Embedding, btag_his: torch.Tensor) -> torch.Tensor:
        """``[p_t, b_t]`` ``(B, T, 2O)``: position and behaviour-type embeddings."""
        types = btag(btag_his)
        return torch.cat([position[: btag_his.shape[1]].unsqueeze(0).expand_as(types), types], dim=-1)

    def _negatives_generator(self) -> torch.Generator:
        """The match loss's sampler, seeded once from torch's seed (``runner.seed``) at its first use."""
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(torch.initial_seed())
        return self._generator

    def forward(self, btag_his: torch.Tensor, cate_his: torch.Tensor, brand_his: torch.Tensor, mask: torch.Tensor,
                match_mask: torch.Tensor, uid: torch.Tensor, cms_segid: torch.Tensor, cms_group_id: torch.Tensor,
                final_gender_code: torch.Tensor, age_level: torch.Tensor, pvalue_level: torch.Tensor,
                shopping_level: torch.Tensor, occupation: torch.Tensor, new_user_class_level: torch.Tensor,
                adgroup_id: torch.Tensor, cate_id: torch.Tensor, campaign_id: torch.Tensor, customer: torch.Tensor,
                brand: torch.Tensor, price: torch.Tensor, pid: torch.Tensor, return_extras: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        behaviours = torch.cat([self.cate(cate_his), self.brand(brand_his)], dim=-1)  # (B, T, 2M)
        valid = mask > 0
        # user-to-item: u_t for every t, r_u2i = u_T . v'_target
        states = self.user_to_item(behaviours, self._context(self.dm_position, self.dm_btag, btag_his), valid)
        cate_id, brand = cate_id.reshape(-1), brand.reshape(-1)
        rel_u2i = (states[:, -1] * F.embedding(cate_id, self.dm_item)).sum(-1, keepdim=True)
        # item-to-item
        target = torch.cat([self.cate(cate_id), self.brand(brand)], dim=-1)  # (B, 2M)
        interest, rel_i2i, _ = self.item_to_item(target, behaviours, self._context(self.position, self.btag,
                                                                                   btag_his), valid)
        history_sum = masked_pool(behaviours, valid, "sum")
        profile = [table(field.reshape(-1)) for table, field in zip(self.profile, (
            cms_segid, cms_group_id, final_gender_code, age_level, pvalue_level, shopping_level, occupation,
            new_user_class_level))]
        features = torch.cat([self.uid(uid.reshape(-1)), *profile, self.adgroup_id(adgroup_id.reshape(-1)),
                              self.cate(cate_id), self.brand(brand), self.campaign_id(campaign_id.reshape(-1)),
                              self.customer(customer.reshape(-1)), price.reshape(-1, 1).to(behaviours.dtype),
                              self.pid(pid.reshape(-1)), history_sum, target * history_sum, rel_u2i, rel_i2i,
                              interest], dim=-1)
        prob = torch.sigmoid(self.mlp(self.input_norm(features)))
        if not return_extras:
            return prob
        # auxiliary match loss: u_{T-1} (behaviours 1..T-1) predicts the category of behaviour T
        counted = match_mask[:, -2] * mask[:, -1]
        aux = match_loss(states[:, -2], cate_his[:, -1], self.dm_item, self.dm_item_bias, counted,
                         self.aux_num_sampled, self._negatives_generator() if self.aux_num_sampled > 0 else None)
        return prob, {"aux_loss": aux}
