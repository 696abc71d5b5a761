"""Leaf helpers (import nothing else of the package): atomic files, image reading, safe
checkpoint reading and layout detection, torch/numpy compatibility."""
from .fileio import atomic_save  # noqa: F401
