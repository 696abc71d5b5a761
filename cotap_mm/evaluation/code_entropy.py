"""How much the CoTAP projection heads' patch scores tell the prototypes apart, and the entropy
of the Sinkhorn codes made from them (``tools/analysis/code_entropy.py``): scores that spread
too little give near-uniform codes, from which the code losses learn nothing."""
from typing import Dict, Sequence

import torch

from cotap_mm.models.utils import code_entropy, sinkhorn_knopp

__all__ = ['score_code_stats', 'head_patch_scores']


@torch.no_grad()
def score_code_stats(scores: torch.Tensor, temperatures: Sequence[float],
                     sinkhorn_iters: int = 3) -> Dict[str, float]:
    """(N, K) cosine scores of N patches -> their spread (std over the K prototypes per patch,
    and over the N patches per prototype) and, per Sinkhorn temperature, the mean entropy and
    largest probability of the codes (``log K`` and ``1 / K`` when uniform)."""
    out = dict(num_patches=int(scores.shape[0]), num_prototypes=int(scores.shape[1]),
               std_over_prototypes=float(scores.std(1).mean()),
               std_over_patches=float(scores.std(0).mean()))
    for t in temperatures:
        q = sinkhorn_knopp(scores.float(), float(t), sinkhorn_iters, 'local')
        out[f'entropy@{t:g}'] = float(code_entropy(q))
        out[f'max_prob@{t:g}'] = float(q.max(1).values.mean())
    return out


@torch.no_grad()
def head_patch_scores(backbone, head, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) normalised crops -> (B * N, K) scores of ``head`` on the patch tokens of
    the CoTAP model's ``backbone`` (its (B, 1 + N, C) output), as the CoTAP step computes them."""
    tokens = backbone(x)[0]  # (B, 1 + N, C)
    scores = head(tokens[:, 1:])  # (B, N, K), the CLS token dropped as in the step
    return scores.reshape(-1, scores.shape[-1])
