"""Feature extraction and result files shared by the probe tools (``tools/analysis/``): run a
frozen backbone over a loader, cache the features under a key of what they depend on, and make
results strict-JSON-friendly. Building the backbone and loading its weights:
:mod:`cotap_mm.models.utils.loading`; the folder datasets:
:mod:`cotap_mm.datasets.folder_datasets`."""
import json
import math
import os
import os.path as osp
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from cotap_mm.utils.fileio import atomic_save
from cotap_mm.utils.images import load_center_crop

__all__ = ['extract_features', 'patch_features', 'ImageFiles', 'UnreadableImagesError',
           'image_embeddings', 'cached_features', 'json_safe', 'format_table']


@torch.no_grad()
def extract_features(backbone: torch.nn.Module,
                     loader,
                     device='cpu',
                     post: Optional[Callable] = None,
                     desc: str = 'features',
                     logger=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` over ``loader`` and stack its (last) outputs and the targets.

    Args:
        backbone (nn.Module): Returns a tuple of outputs; the last one is used.
        loader (DataLoader): Yields ``(imgs (B, 3, H, W), targets)``.
        device (str | torch.device): Where the backbone runs.
        post (callable, optional): Applied to each (B, ...) output batch (e.g. to move it to
            the CPU in half precision); default: ``.float().cpu()``.
        desc (str): Name shown in the log.

    Returns:
        tuple[Tensor, Tensor]: features (N, ...) and targets (N, ...), on the CPU.
    """
    from mmengine.utils import ProgressBar
    backbone = backbone.to(device).eval()
    if logger is not None:
        logger.info(f'Extracting {desc}: {len(loader.dataset)} images')
    bar = ProgressBar(len(loader.dataset))
    feats, targets = [], []
    for imgs, tgt in loader:
        out = backbone(imgs.to(device, non_blocking=True))
        out = out[-1] if isinstance(out, (tuple, list)) else out
        feats.append(post(out) if post is not None else out.float().cpu())
        targets.append(torch.as_tensor(tgt))
        for _ in range(imgs.shape[0]):
            bar.update()
    print(flush=True)  # the progress bar leaves the cursor on its line
    return torch.cat(feats), torch.cat(targets)


@torch.no_grad()
def patch_features(backbone: torch.nn.Module, x: torch.Tensor, device='cpu',
                   normalize: bool = False) -> torch.Tensor:
    """The patch map of a ``featmap`` backbone as tokens: (B, 3, S, S) -> (B, h, w, C) float32
    (L2-normalised over C with ``normalize``), on ``device``."""
    out = backbone(x.to(device))[-1].float()  # (B, C, h, w)
    out = out.permute(0, 2, 3, 1)  # (B, h, w, C)
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


class ImageFiles(torch.utils.data.Dataset):
    """Image files -> ((3, S, S) float, error): shorter side resized (bicubic) to S, centre
    crop, ImageNet normalisation.

    An unreadable image gives zeros and a non-empty error string, so that a caller can list all
    of them at the end rather than stop at the first one. Truncated JPEGs count as unreadable,
    as in ``ImageList``.
    """

    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.size = list(paths), size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return load_center_crop(self.paths[i], self.size, self.size, interpolation='bicubic',
                                    check_truncation=True), ''
        except RuntimeError as e:  # read_rgb wraps the decoder's error
            cause = e.__cause__ or e
            return torch.zeros(3, self.size, self.size), f'{type(cause).__name__}: {cause}'


class UnreadableImagesError(RuntimeError):
    """Some images of a folder cannot be decoded (listed in the message)."""


@torch.no_grad()
def image_embeddings(model: torch.nn.Module, paths: Sequence[str], image_size: int,
                     batch_size: int, num_workers: int = 0, device='cpu', logger=None,
                     tool: str = 'image_embeddings') -> np.ndarray:
    """(N, D) float32 L2-normalised mean-pooled patch tokens of a ``raw`` ViT, in ``paths``
    order (:class:`ImageFiles` preprocessing; the CLS token is dropped).

    Raises:
        UnreadableImagesError: after the pass, listing every image that could not be decoded
            (``tool`` names the command line in the message).
    """
    from mmengine.utils import ProgressBar
    loader = torch.utils.data.DataLoader(ImageFiles(paths, image_size), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers)
    feats, bad, start = [], [], 0
    bar = ProgressBar(len(paths))
    for x, errors in loader:
        bad.extend((start + j, err) for j, err in enumerate(errors) if err)
        start += len(errors)
        tokens = model(x.to(device))[-1]  # (B, 1 + N, D)
        f = tokens[:, 1:].float().mean(dim=1)
        feats.append(torch.nn.functional.normalize(f, dim=1).cpu())
        for _ in range(x.shape[0]):
            bar.update()
    print(flush=True)  # the progress bar leaves the cursor on its line
    if bad:
        lines = [f'  {paths[i]}: {err}' for i, err in bad]
        if logger is not None:
            logger.error('Unreadable images:\n' + '\n'.join(lines))
        shown = '\n'.join(lines[:20]) + (f'\n  ... and {len(lines) - 20} more (all in the '
                                         'log above)' if len(lines) > 20 else '')
        raise UnreadableImagesError(
            f'{tool}: {len(bad)} of {len(paths)} images cannot be read (nothing '
            f'written):\n{shown}\nReplace or delete them (the npz rows must match ImageList, '
            'which lists the same files), then run this command again.')
    return torch.cat(feats).numpy().astype(np.float32)


# --------------------------------------------------------------------------- output


def format_table(title: str, columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A prettytable string (floats with two decimals) for the log and the console."""
    from prettytable import PrettyTable
    t = PrettyTable(list(columns))
    t.title = title
    for r in rows:
        t.add_row([f'{v:.2f}' if isinstance(v, float) else v for v in r])
    return t.get_string()


def json_safe(obj):
    """Make ``obj`` strict-JSON-friendly: tuples to lists, numpy/tensor values to Python, NaN /
    inf to ``None`` (e.g. the IoU of a class absent from prediction and label)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if torch.is_tensor(obj) or isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj


def cached_features(cache: Optional[str], key: dict, compute: Callable, logger=None):
    """Load ``(train..., val...)`` tensors from ``cache`` if its ``key`` matches, else compute
    them and save them there (atomically). ``cache=None`` just computes.

    ``key`` should name everything the features depend on (config, checkpoint, sizes); a cache
    with another key raises instead of silently serving stale features.
    """
    if cache is None:
        return compute()
    if osp.isfile(cache):
        blob = torch.load(cache, map_location='cpu', weights_only=True)
        if blob.get('key') != json.loads(json.dumps(key, default=str)):
            raise ValueError(f'--feature-cache {cache!r} was made with {blob.get("key")}, not '
                             f'{key}: delete it or give another path')
        if logger is not None:
            logger.info(f'Loaded features from {cache}')
        return tuple(blob['tensors'])
    tensors = compute()
    os.makedirs(osp.dirname(osp.abspath(cache)), exist_ok=True)
    atomic_save(dict(key=json.loads(json.dumps(key, default=str)), tensors=list(tensors)), cache)
    if logger is not None:
        logger.info(f'Saved features to {cache}')
    return tensors

