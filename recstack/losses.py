"""Loss pieces shared by model folders: ESCM²'s counterfactual CVR risks (IPS and doubly robust).

Notation, per exposure ``i`` of a batch of ``B``: ``o_i`` the click (1 clicked, 0 not), ``r_i`` the
conversion label, ``p_i`` the predicted CTR (the propensity ``ô_i`` of being clicked), ``q_i`` the
predicted CVR, ``δ_i = BCE(q_i, r_i) = -(r_i log q_i + (1 - r_i) log(1 - q_i))`` the CVR error and
``N_c = Σ_i o_i`` the batch's clicks.

Wang, Chang, Liu, Huang, Chen, Yu, Li, Chu. ESCM²: Entire Space Counterfactual
Multi-Task Model for Post-Click Conversion Rate Estimation. SIGIR 2022. https://arxiv.org/abs/2204.05125
The functions follow PaddleRec's ``models/multitask/escm2/dygraph_model.py`` (``counterfact_ipw``,
``counterfact_dr``), whose constants (propensity floor ``1e-6``, clip 15) are the defaults here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: the smallest propensity divided by (PaddleRec's ``0.000001``)
MIN_PROPENSITY = 1e-6
#: the largest inverse-propensity weight (PaddleRec's ``clip(IPS, -15, 15)``, "online trick")
IPS_CLIP = 15.0


def cvr_errors(cvr: torch.Tensor, conversion: torch.Tensor) -> torch.Tensor:
    """Per-exposure CVR error ``δ_i = BCE(q_i, r_i)`` (no reduction), same shape as ``cvr``."""
    return F.binary_cross_entropy(cvr, conversion.to(cvr.dtype), reduction="none")


def ips_weights(ctr: torch.Tensor, click: torch.Tensor, clip: float = IPS_CLIP,
                min_propensity: float = MIN_PROPENSITY, detach: bool = True) -> torch.Tensor:
    """ESCM²-IPS weights as PaddleRec computes them: ``w_i = o_i · min(1 / max(p_i · N_c, ε), c)``.

    The propensity of exposure ``i`` is scaled by the batch's click count ``N_c``, floored at ``ε``
    (``min_propensity``) and inverted; the inverse is clipped at ``c`` (``clip``) and kept for the
    clicked exposures only. With no clipping, ``Σ_i w_i δ_i = (1/N_c) Σ_i o_i δ_i / p_i``: the
    paper's ``R_IPS = (1/|D|) Σ o_i δ_i / ô_i`` normalised by the clicks instead of the exposures
    (a factor ``B / N_c``). A batch without clicks has all weights 0.

    Args:
        ctr: predicted CTR ``p`` (any shape, e.g. ``(B, 1)``).
        click: click labels ``o``, same shape.
        clip: upper bound ``c`` of the inverse scaled propensity.
        min_propensity: floor ``ε`` of ``p_i · N_c``.
        detach: no gradient through ``p`` (PaddleRec's ``stop_gradient``); ``False`` lets the
            counterfactual risk train the CTR tower too, as the paper's ``R_IPS(φ_CTR, φ_CVR)``.

    Returns:
        ``w``, same shape as ``ctr``.
    """
    o = click.to(ctr.dtype)
    p = ctr.detach() if detach else ctr
    scaled = torch.clamp(p * o.sum(), min=min_propensity)
    return o * torch.clamp(1.0 / scaled, max=clip)


def ips_cvr_loss(cvr: torch.Tensor, ctr: torch.Tensor, click: torch.Tensor, conversion: torch.Tensor,
                 clip: float = IPS_CLIP, min_propensity: float = MIN_PROPENSITY,
                 detach: bool = True) -> torch.Tensor:
    """ESCM²-IPS counterfactual CVR risk ``R_IPS = Σ_i w_i δ_i`` with :func:`ips_weights` ``w``.

    Only clicked exposures contribute (``w_i = 0`` otherwise), each weighted by its clipped inverse
    propensity; PaddleRec writes it ``mean(δ · B · min(1 / max(p N_c, ε), c) · o)``. A scalar.
    """
    return (ips_weights(ctr, click, clip, min_propensity, detach) * cvr_errors(cvr, conversion)).sum()


def dr_cvr_loss(cvr: torch.Tensor, ctr: torch.Tensor, imputation: torch.Tensor, click: torch.Tensor,
                conversion: torch.Tensor, clip: float = IPS_CLIP, min_propensity: float = MIN_PROPENSITY,
                detach: bool = True) -> torch.Tensor:
    """ESCM²-DR counterfactual CVR risk: the doubly robust error risk plus the imputation risk.

    With the imputed error ``δ̂_i`` (the imputation tower's output), the error deviation
    ``e_i = δ_i - δ̂_i`` and the inverse propensity ``v_i = min(o_i / max(p_i, ε), c)`` (not scaled
    by ``N_c``, unlike :func:`ips_weights`)::

        R_err = (1/B) Σ_i [ δ̂_i + v_i e_i ]      (imputed errors over every exposure, IPS-corrected on clicks)
        R_imp = (1/B) Σ_i v_i e_i²                (trains the imputation on the clicked exposures)
        R_DR  = R_err + R_imp

    Gradients reach both the CVR tower (through ``δ_i``) and the imputation tower (through ``δ̂_i``)
    in both terms, as in PaddleRec; ``detach`` as :func:`ips_weights`. A scalar.

    Args:
        cvr: predicted CVR ``q``, e.g. ``(B, 1)``.
        ctr: predicted CTR ``p``, same shape.
        imputation: imputed error ``δ̂``, same shape.
        click: ``o``; conversion: ``r``; both same shape.
        clip, min_propensity, detach: as :func:`ips_weights`.
    """
    o = click.to(ctr.dtype)
    p = ctr.detach() if detach else ctr
    v = torch.clamp(o / torch.clamp(p, min=min_propensity), max=clip)
    e = cvr_errors(cvr, conversion) - imputation
    return (imputation + v * e + v * e.square()).mean()
