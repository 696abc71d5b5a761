"""The kNN file of an image folder (``tools/precompute_knn.py``; docs/data.md): image embeddings
of a plain ViT (mean of the last layer's patch tokens, L2-normalised), their exact cosine top-k,
written by :func:`cotap_mm.datasets.knn_pairs.write_knn_file` with what ``KNNPairDataset``
checks."""
from typing import Optional, Sequence

import numpy as np
import torch

from cotap_mm.datasets.image_list import list_images
from cotap_mm.datasets.knn_pairs import write_knn_file
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
from cotap_mm.models.utils.loading import load_backbone_weights, read_checkpoint
from cotap_mm.utils.images import IMG_EXTENSIONS
from .features import image_embeddings

__all__ = ['force_self_first', 'knn_search', 'build_knn_file']

RANDOM_WEIGHTS_WARNING = ('!' * 78 + '\nprecompute_knn: NO --checkpoint given: the features '
                          'come from a RANDOMLY INITIALISED ViT, so the neighbours are '
                          'meaningless. Use this for tests only.\n' + '!' * 78)


def force_self_first(nns: np.ndarray) -> np.ndarray:
    """Make column 0 of row i equal i (ties between duplicates may put another image first).

    If i is in the row it is moved to the front (the others keep their order); otherwise it is
    prepended and the last neighbour dropped.
    """
    n, k = nns.shape
    rows = np.arange(n)[:, None]
    is_self = nns == rows                                          # (N, k)
    has_self = is_self.any(axis=1)
    # Position of self, or k-1 (the dropped last column) when absent.
    pos = np.where(has_self, is_self.argmax(axis=1), k - 1)
    cols = np.arange(k)[None]
    # New row: [i, old[0..pos-1], old[pos+1..k-1]].
    src = np.where(cols <= pos[:, None], cols - 1, cols)          # (N, k); -1 at column 0
    out = np.take_along_axis(nns, np.clip(src, 0, k - 1), axis=1)
    out[:, 0] = np.arange(n)
    return out


def knn_search(features: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """Top-k cosine neighbours (features L2-normalised): (N, k) int64, self in column 0.

    Exact inner-product search: faiss's ``IndexFlatIP`` when faiss is installed, else the same
    search with torch matrix products in row chunks (the pretraining-only environments)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    try:
        import faiss
    except ImportError:
        feats = torch.from_numpy(features)
        nns = torch.cat([torch.topk(feats[i:i + chunk] @ feats.T, k, dim=1).indices
                         for i in range(0, len(feats), chunk)]).numpy()
    else:
        index = faiss.IndexFlatIP(features.shape[1])
        index.add(features)
        _, nns = index.search(features, k)
    return force_self_first(nns.astype(np.int64))



def build_knn_file(image_dir: str, out: str, logger, checkpoint: Optional[str] = None,
                   prefix: Optional[str] = None, unsafe_pickle: bool = False,
                   arch: Optional[str] = None, patch_size: Optional[int] = None, k: int = 30,
                   batch_size: int = 64, image_size: int = 224, num_workers: int = 4,
                   extensions: Sequence[str] = IMG_EXTENSIONS,
                   device: str = 'cpu') -> np.ndarray:
    """Write the kNN file of the images under ``image_dir`` to ``out``; returns ``nns`` (N, k).

    ``arch``/``patch_size`` default to the ``meta`` of ``checkpoint`` (written by the converters),
    else ViT-B/16; without ``checkpoint`` the ViT is random (tests only, loudly logged)."""
    paths = list_images(image_dir, extensions)
    if not paths:
        raise FileNotFoundError(f'precompute_knn: no image with extensions {list(extensions)} '
                                f'under {image_dir!r}; check the folder or --extensions')
    if k > len(paths):
        logger.warning(f'--k {k} > number of images {len(paths)}: using k={len(paths)}')
        k = len(paths)
    ckpt = read_checkpoint(checkpoint, unsafe_pickle) if checkpoint else None
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    from_meta = bool(meta.get('arch')) and not arch
    arch = arch or meta.get('arch') or 'base'
    patch_size = patch_size or meta.get('patch_size') or 16
    if from_meta:
        logger.info(f'arch {arch}, patch size {patch_size} from the meta of {checkpoint}')
    model = CoTAPVisionTransformer(arch=arch, patch_size=patch_size, img_size=image_size,
                                   with_oaf=False, out_type='raw')
    if checkpoint:  # the student's backbone.*, or ``prefix``; a bare state dict is taken whole
        load_backbone_weights(model, checkpoint, prefix=prefix, ckpt=ckpt, logger=logger)
    else:
        logger.warning(RANDOM_WEIGHTS_WARNING)
    model.eval().to(device)
    logger.info(f'{len(paths)} images under {image_dir}; arch={arch}/{patch_size}, image size '
                f'{image_size}, k={k}')
    feats = image_embeddings(model, paths, image_size, batch_size, num_workers, device, logger,
                             tool='precompute_knn')
    nns = knn_search(feats, k)
    write_knn_file(out, nns, paths, image_dir)
    logger.info(f'Wrote {out}: nns {nns.shape} {nns.dtype}')
    return nns
