"""Evaluation probes beyond segmentation fine-tuning (docs/probes.md).

- :mod:`.functional`: pure functions: weighted kNN (chunked), the (k, T) grid, the single-pass
  linear probe, k-means + Hungarian / many-to-one cluster matching, confusion-matrix mIoU, the
  semantic concentration of patch features (intra- vs inter-class cosine across images).
- :mod:`.features`: backbone from a config + strict checkpoint loading, ImageNet-style and
  mmseg-layout folder datasets, feature extraction, atomic JSON output (used by
  ``tools/analysis/*``).
"""
from . import features, functional  # noqa: F401
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_all

__all__ = ['features', 'functional', *_functional_all]
