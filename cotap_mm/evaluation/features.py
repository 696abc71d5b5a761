"""Feature extraction and result files shared by the probe tools (``tools/analysis/``): run a
frozen backbone over a loader, cache the features under a key of what they depend on, and write
strict JSON atomically. Building the backbone and loading its weights:
:mod:`cotap_mm.models.utils.loading`; the folder datasets: :mod:`cotap_mm.datasets.folder_datasets`;
the tools' shared arguments: :mod:`.cli`."""
import json
import math
import os
import os.path as osp
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from cotap_mm.utils.fileio import atomic_open, atomic_save

__all__ = ['extract_features', 'cached_features', 'json_safe', 'dump_json_atomic',
           'format_table']


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


# --------------------------------------------------------------------------- output


def dump_json_atomic(obj, path: str) -> str:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`cotap_mm.utils.fileio.atomic_open`)."""
    path = osp.abspath(path)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with atomic_open(path, 'w') as f:
        json.dump(obj, f, indent=2, default=str)  # e.g. odd types in checkpoint meta
        f.write('\n')
    return path


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

