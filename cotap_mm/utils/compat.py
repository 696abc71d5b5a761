"""Compatibility patches for the new torch / numpy 2 stack, applied once on ``import cotap_mm``.

torch >= 2.6 makes ``torch.load`` default to ``weights_only=True``. mmengine 0.10.7 never passes
``weights_only``, so ``Runner`` resume, ``load_from`` and ``init_cfg=dict(type='Pretrained')`` of
its *own* checkpoints fail: besides tensors, a Runner checkpoint holds the message hub, whose
:class:`~mmengine.logging.HistoryBuffer` objects carry numpy arrays and scalars.

Rather than turning the safety check off (``weights_only=False`` or
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which would also execute arbitrary pickles from
downloaded files), :func:`allow_mmengine_checkpoints` allow-lists exactly the globals such a
checkpoint references. They were found by saving a real Runner checkpoint and listing them with
``torch.serialization.get_unsafe_globals_in_checkpoint``:

- ``mmengine.logging.history_buffer.HistoryBuffer`` (plain data: arrays and a max length);
- ``numpy.ndarray``, ``numpy._core.multiarray._reconstruct``, ``numpy._core.multiarray.scalar``,
  ``numpy.dtype`` and numpy 2's dtype classes (``numpy.dtypes.Float64DType``, ...), which the
  weights-only unpickler needs to ``BUILD`` a dtype instance; numpy 1 spells the module
  ``numpy.core.multiarray``, so both names are registered and old checkpoints load on numpy 2;
- ``builtins.getattr``: ``HistoryBuffer.__getstate__`` pickles its statistics methods as
  ``getattr(HistoryBuffer, 'mean')``. Allow-listing the real ``getattr`` would let a crafted
  file reach arbitrary attributes (``__globals__`` of any allowed function, ...), so the name is
  bound to :func:`_history_buffer_getattr`, which resolves only the registered statistics methods
  of ``HistoryBuffer`` and refuses everything else. (Do not also allow-list the real
  ``getattr``: torch keys the allow-list by name, so one of the two would win arbitrarily.)

Anything else (``os.system``, custom classes, ...) is still refused by ``torch.load``.

One type cannot reasonably be allow-listed: mmengine's ``OneCycleParamScheduler`` keeps its
annealing function as a *bound method* in ``__dict__``, which its ``state_dict()`` returns, so the
checkpoint pickles the whole scheduler with its optimizer wrapper and model parameters behind a
``getattr``. Such checkpoints are refused; resuming one needs an explicit
``torch.load(..., weights_only=False)`` of a trusted file (no config of this project uses it).
On torch < 2.4 (no ``add_safe_globals``; e.g. the torch 2.1 GPU path, where ``weights_only``
defaults to False anyway) the allow-list is skipped.
"""
import pickle

import numpy as np
import torch

__all__ = ['allow_mmengine_checkpoints', 'mmengine_safe_globals']

_DEFAULT_STATISTICS = frozenset(('min', 'max', 'current', 'mean'))


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` inside weights-only ``torch.load``.

    Only ``getattr(HistoryBuffer, <registered statistics method>)`` is resolved, which is what
    ``HistoryBuffer.__getstate__`` pickles; every other call raises ``UnpicklingError``.
    """
    from mmengine.logging import HistoryBuffer

    # the class-level registry is filled lazily by the first HistoryBuffer(), so the four
    # defaults are listed explicitly
    allowed = _DEFAULT_STATISTICS.union(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'cotap_mm: refusing getattr({obj!r}, {name!r}) in a weights-only torch.load; only '
        'the statistics methods of mmengine HistoryBuffer are allowed')


def _numpy_core():
    """numpy's core module: ``numpy._core`` in numpy 2, ``numpy.core`` in numpy 1."""
    core = getattr(np, '_core', None)
    if core is None or not hasattr(core, 'multiarray'):
        import numpy.core as core  # numpy 1.x
    return core


def mmengine_safe_globals():
    """Globals needed to load mmengine 0.10.x Runner checkpoints with ``weights_only=True``.

    Returns:
        list: items for ``torch.serialization.add_safe_globals``: objects, or
        ``(object, 'pickled.full.name')`` pairs where the pickled name differs from the
        object's own ``module.qualname`` (numpy 1 vs 2 module names, the getattr stand-in).
    """
    from mmengine.logging import HistoryBuffer

    multiarray = _numpy_core().multiarray
    items = [HistoryBuffer, np.ndarray, np.dtype,
             (_history_buffer_getattr, 'builtins.getattr')]
    for fn_name in ('_reconstruct', 'scalar'):
        fn = getattr(multiarray, fn_name)
        # both spellings, so that checkpoints pickled under numpy 1 or 2 load on either
        items += [(fn, f'numpy._core.multiarray.{fn_name}'),
                  (fn, f'numpy.core.multiarray.{fn_name}')]
    # numpy >= 1.25 gives every dtype instance a class of its own (np.dtypes.Float64DType, ...);
    # the weights-only unpickler only BUILDs instances whose type is allow-listed.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        items += [getattr(dtypes, n) for n in sorted(dir(dtypes))
                  if n.endswith('DType') and isinstance(getattr(dtypes, n), type)]
    return items


def allow_mmengine_checkpoints():
    """Allow-list :func:`mmengine_safe_globals` for ``torch.load`` (idempotent).

    Returns:
        bool: True if the allow-list is (now) active, False on torch without
        ``torch.serialization.add_safe_globals`` (torch < 2.4).
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return False
    # torch keeps the allow-list in a set, so adding the same items again is a no-op; calling
    # this again restores the list after a torch.serialization.clear_safe_globals()
    add_safe_globals(mmengine_safe_globals())
    return True


allow_mmengine_checkpoints()
