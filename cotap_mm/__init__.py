"""cotap_mm: CoTAP dense self-supervised post-training as an OpenMMLab plugin.

``import cotap_mm`` (or ``custom_imports = dict(imports=['cotap_mm'])`` in a config) applies the
torch compatibility patches and registers every component in mmpretrain's (and, for the backbone,
mmsegmentation's) registries.
"""
from .version import __version__
from .utils import compat  # noqa: F401  (applied on import)
from . import datasets, engine, models  # noqa: F401,E402  (registers components)

__all__ = ['__version__']
