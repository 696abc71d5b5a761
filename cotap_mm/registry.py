"""Where cotap_mm components are registered.

cotap_mm registers straight into the host toolboxes' registry nodes instead of defining a scope of
its own, so that configs keep ``default_scope='mmpretrain'`` (pretraining) or ``'mmseg'``
(downstream) and name cotap_mm components by their plain names (``type='ContinuousAPLoss'``).
A child registry (``Registry('model', parent=mmpretrain.registry.MODELS)``) would not do: mmengine
resolves an unprefixed name in the current scope's node and its *ancestors* only, never in children,
so plain names would fail under ``default_scope='mmpretrain'`` (see tests/test_registry.py).

Pretraining components (algorithm, necks, heads, losses, transforms, datasets, samplers, hooks) go into
mmpretrain's nodes, exported here; the loader's worker initialisation into mmengine's ``FUNCTIONS``. Components that mmsegmentation must build too (the CoTAP
backbone) are also registered in mmseg's ``MODELS`` through :func:`register_in_mmseg`, which imports
only the light ``mmseg.registry`` module, never ``mmseg.models``.
"""
from mmengine.registry import FUNCTIONS  # mmpretrain has no node of its own: the root's
from mmpretrain.registry import (DATA_SAMPLERS, DATASETS, HOOKS, LOOPS, METRICS, MODELS,
                                 TRANSFORMS)

__all__ = ['MODELS', 'DATASETS', 'DATA_SAMPLERS', 'TRANSFORMS', 'HOOKS', 'LOOPS', 'METRICS',
           'FUNCTIONS', 'register_in_mmseg']


def register_in_mmseg(module):
    """Register ``module`` (a class) in mmsegmentation's ``MODELS`` node as well.

    Use as a decorator below ``@MODELS.register_module()``. Without mmsegmentation installed, this
    is a no-op: pretraining needs only mmpretrain.
    """
    try:
        from mmseg.registry import MODELS as SEG_MODELS
    except ImportError:  # mmseg is an optional extra for pretraining-only installs
        return module
    SEG_MODELS.register_module(module=module)
    return module
