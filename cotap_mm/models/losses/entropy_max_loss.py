"""EntropyMax loss on the OAF prototypes (docs/method.md §2.5)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_positive

__all__ = ['entropy_max_loss', 'EntropyMaxLoss']


def entropy_max_loss(kernel, bank, temperature=0.1):
    """Mean entropy of each prototype's softmax similarity distribution over the bank samples.

    Both inputs are flattened to vectors of 9D entries and L2-normalised (eps 1e-12);
    ``s = cos(kernel_m, bank_k)`` (M x K), ``p_m = softmax_k(s_m / temperature)`` and the loss is
    ``mean_m H(p_m)``. Despite the name (kept from the reference), it is **minimised**: each
    prototype is pulled towards a few bank samples. The bank is detached, so the gradient goes to
    the kernel only. Computed in fp32 even under autocast (the reference ran the matmul in fp16).

    Args:
        kernel (Tensor): Prototypes (M, D, 3, 3) (any (M, ...) shape), usually the OAF's
            ``kernel`` Parameter.
        bank (Tensor): Bank samples (K, D, 3, 3) with K >= 1 (same trailing size as ``kernel``).
        temperature (float): Softmax temperature. Defaults to 0.1.

    Returns:
        Tensor: Scalar loss (fp32).

    Raises:
        ValueError: On an empty bank (K == 0) or mismatched shapes. With CoTAP's step order the
        bank already holds the current step's samples when the loss runs, so an empty bank is a
        wiring error rather than a state to paper over with a zero.
    """
    if not isinstance(kernel, torch.Tensor) or not isinstance(bank, torch.Tensor):
        raise TypeError('entropy_max_loss: kernel and bank must be tensors')
    if kernel.dim() < 2 or kernel.shape[0] == 0:
        raise ValueError(f'entropy_max_loss: kernel must be (M, D, 3, 3) with M >= 1, got shape '
                         f'{tuple(kernel.shape)}')
    if bank.dim() < 2 or bank.shape[0] == 0:
        raise ValueError(f'entropy_max_loss: bank is empty (shape {tuple(bank.shape)}); fill the '
                         f'prototype bank before computing the loss')
    if kernel[0].numel() != bank[0].numel():
        raise ValueError(f'entropy_max_loss: kernel {tuple(kernel.shape)} and bank '
                         f'{tuple(bank.shape)} have different per-sample sizes')
    check_positive('entropy_max_loss', 'temperature', temperature)
    with torch.autocast(device_type=kernel.device.type, enabled=False):
        k = F.normalize(kernel.float().flatten(1), dim=1, eps=1e-12)
        b = F.normalize(bank.detach().float().flatten(1), dim=1, eps=1e-12)
        logits = k @ b.T / temperature  # (M, K)
        logp = logits.log_softmax(dim=1)
        return -(logp.exp() * logp).sum(dim=1).mean()


@MODELS.register_module()
class EntropyMaxLoss(nn.Module):
    """Module wrapper of :func:`entropy_max_loss` (config ``entropy_max``: T 0.1, weight 1).

    Args:
        temperature (float): Softmax temperature. Defaults to 0.1.
        loss_weight (float): Weight of the loss. Defaults to 1.0.

    ``forward(kernel (M, D, 3, 3), bank (K, D, 3, 3))`` returns ``loss_weight * entropy``.
    """

    def __init__(self, temperature=0.1, loss_weight=1.0):
        super().__init__()
        check_positive('EntropyMaxLoss', 'temperature', temperature)
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, kernel, bank):
        return self.loss_weight * entropy_max_loss(kernel, bank, self.temperature)
