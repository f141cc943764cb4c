"""DBMTL: Deep Bayesian Multi-Target Learning for Recommender Systems.

Qi Wang, Zhihui Ji, Huasheng Liu, Binqiang Zhao (Alibaba). arXiv 2019.
https://arxiv.org/abs/1902.09154 ; as built by EasyRec's ``DBMTL`` model.

The targets form a Bayesian network whose links are hidden layers. With shared
features ``x`` (the feature group ``all``) and towers in config order::

    b   = bottom_dnn(x)
    h_t = dnn_t(b)
    r_t = relation_dnn_t([h_t, r_s for s in relation_tower_names_t])
    y_t = sigmoid(w_t . r_t + c_t)   (CLASSIFICATION)   or   w_t . r_t + c_t   (L2_LOSS)

so ``P(y_1, y_2 | x) = P(y_1 | x) P(y_2 | y_1, x)`` when tower 2 names tower 1
(``is_valid_play`` -> ``play_time``): tower 2 reads tower 1's relation output.
Loss: ``sum_t weight_t * mean(loss_t) + l2_regularization * sum ||W||^2 / 2``
(+ ``embedding_regularization * sum e^2 / 2`` over the batch's id embeddings).
"""

from recstack.easyrec.dbmtl import DBMTL

__all__ = ["DBMTL"]
