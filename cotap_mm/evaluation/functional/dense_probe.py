"""Dense linear probe: a 1x1-conv classifier of frozen feature maps, its logits upsampled
bilinearly to the label size (the mmseg linear-head computation, without a Runner), fitted with
Adam on mini-batches (:class:`~cotap_mm.engine.hooks.DenseProbeHook` during pretraining) or to
convergence with full-batch L-BFGS (``tools/analysis/linear_segmentation.py``), whose score does
not depend on how far a stochastic optimiser got."""
import torch
import torch.nn.functional as F

__all__ = ['fit_dense_linear_probe']


def _probe_logits(weight, bias, feats, size):
    logits = F.conv2d(feats, weight[:, :, None, None], bias)
    return F.interpolate(logits, size=size, mode='bilinear', align_corners=False)


def _fit_lbfgs(weight, bias, x, labels, size, iters, ignore_index, weight_decay, chunk):
    valid = int((labels != ignore_index).sum())
    if valid == 0:
        raise ValueError('fit_dense_linear_probe: every label is ignore_index')
    optim = torch.optim.LBFGS([weight, bias], lr=1., max_iter=int(iters), history_size=20,
                              tolerance_grad=1e-9, tolerance_change=1e-12,
                              line_search_fn='strong_wolfe')

    def closure():
        optim.zero_grad(set_to_none=True)
        total = 0.
        for s in range(0, x.shape[0], chunk):
            ce = F.cross_entropy(_probe_logits(weight, bias, x[s:s + chunk], size),
                                 labels[s:s + chunk], ignore_index=ignore_index,
                                 reduction='sum') / valid
            ce.backward()
            total += float(ce.detach())
        penalty = weight_decay * weight.square().sum()
        if weight_decay:
            penalty.backward()
        return torch.tensor(total + float(penalty.detach()))

    with torch.enable_grad():
        optim.step(closure)
        final = float(closure())  # the loss and gradient at the weights it stopped at
    grad_norm = torch.cat([weight.grad.flatten(), bias.grad.flatten()]).norm().item()
    state = optim.state[weight]
    return dict(final_loss=final, grad_norm=grad_norm, iterations=int(state['n_iter']),
                function_evals=int(state['func_evals']), max_iterations=int(iters),
                weight_decay=float(weight_decay))


def fit_dense_linear_probe(feats,
                           labels,
                           num_classes,
                           iters=200,
                           lr=1e-2,
                           batch_size=None,
                           ignore_index=255,
                           normalize=True,
                           seed=0,
                           optimizer='adam',
                           weight_decay=0.,
                           chunk=64):
    """Fit a 1x1-conv probe on feature maps; return a predictor.

    Logits (B, K, h, w) are upsampled bilinearly to the label resolution (H, W) and trained with
    cross-entropy ignoring ``ignore_index`` (mmseg style). The global RNG is left untouched: the
    initialisation and the batch sampling use a private generator seeded with ``seed``.

    Args:
        feats (Tensor): (N, C, h, w) features.
        labels (Tensor): (N, H, W) integer labels.
        num_classes (int): Number of classes K.
        iters (int): Adam steps.
        lr (float): Adam learning rate.
        batch_size (int, optional): Images per step, sampled at random; ``None``: full batch.
        ignore_index (int): Label value to ignore.
        normalize (bool): Standardise each channel with the mean/std of ``feats``.
        seed (int): Seed of the private generator.
        optimizer (str): ``'adam'`` (``iters`` steps of ``lr``, ``batch_size`` images each) or
            ``'lbfgs'``: full-batch L-BFGS with strong-Wolfe line search, at most ``iters``
            iterations, the loss and gradient accumulated over blocks of ``chunk`` images (the
            upsampled logits of the whole set never exist at once); ``lr`` and ``batch_size``
            are not used.
        weight_decay (float): L2 penalty ``weight_decay * ||W||^2`` added to the mean
            cross-entropy (keeps L-BFGS finite on separable features). Defaults to 0.

    Returns:
        Callable[[Tensor], Tensor]: maps (M, C, h, w) features to (M, K, H, W) logits. With
        ``'lbfgs'`` its ``fit_log`` attribute says how the fit ended: ``final_loss`` (the
        regularised objective), ``grad_norm`` (of the weights and bias there), ``iterations``,
        ``function_evals``, ``max_iterations``, ``weight_decay``; None with ``'adam'``.
    """
    device = feats.device
    N, C = feats.shape[:2]
    size = tuple(labels.shape[-2:])
    labels = labels.long()
    if normalize:
        mean = feats.mean(dim=(0, 2, 3), keepdim=True)
        std = feats.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    else:
        mean = torch.zeros(1, C, 1, 1, device=device, dtype=feats.dtype)
        std = torch.ones(1, C, 1, 1, device=device, dtype=feats.dtype)
    x = (feats - mean) / std
    gen = torch.Generator().manual_seed(int(seed))
    weight = (torch.randn(num_classes, C, generator=gen) * 0.01).to(device).requires_grad_()
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    fit_log = None
    if optimizer == 'lbfgs':
        fit_log = _fit_lbfgs(weight, bias, x, labels, size, iters, ignore_index, weight_decay,
                             chunk)
    elif optimizer == 'adam':
        optim = torch.optim.Adam([weight, bias], lr=lr)
        with torch.enable_grad():
            for _ in range(int(iters)):
                if batch_size is None or batch_size >= N:
                    xb, yb = x, labels
                else:
                    idx = torch.randperm(N, generator=gen)[:batch_size].to(device)
                    xb, yb = x[idx], labels[idx]
                loss = F.cross_entropy(_probe_logits(weight, bias, xb, size), yb,
                                       ignore_index=ignore_index)
                loss = loss + weight_decay * weight.square().sum()
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
    else:
        raise ValueError(f"fit_dense_linear_probe: optimizer must be 'adam' or 'lbfgs', got "
                         f'{optimizer!r}')
    weight, bias = weight.detach(), bias.detach()

    def predict(new_feats):
        with torch.no_grad():
            return _probe_logits(weight, bias, (new_feats - mean) / std, size)

    predict.fit_log = fit_log
    return predict
