"""Evaluation probes beyond segmentation fine-tuning (docs/probes.md).

- :mod:`.functional`: pure functions: weighted kNN (chunked), the (k, T) grid, the single-pass
  linear probe, k-means + Hungarian / many-to-one cluster matching, confusion-matrix mIoU, the
  semantic concentration of patch features (intra- vs inter-class cosine across images).
- :mod:`.knn_builder`: the kNN file of an image folder (``tools/precompute_knn.py``).
- :mod:`.features`: feature extraction and caching, strict JSON output (used by the probe tools
  of ``tools/analysis/``).
"""
from . import features, functional  # noqa: F401
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_all

__all__ = ['features', 'functional', *_functional_all]
