"""Reading checkpoint files safely: ``torch.load(weights_only=True)`` unless the user opts in.

Used by every path that opens a checkpoint (the strict backbone loader, the converters, the
tools), so a file that pickles Python objects is refused the same way everywhere, with the same
message naming ``--unsafe-pickle``.
"""
import contextlib
import os
import os.path as osp
import zipfile
from argparse import Namespace  # what DINO / iBOT / Mugs pickle their `args` as

import torch

__all__ = ['CheckpointConversionError', 'first_keys', 'mismatch_lines', 'load_source',
           'is_tensor_dict', 'flat_state_dict']

FIRST = 8  # keys shown in error messages


class CheckpointConversionError(ValueError):
    """A checkpoint cannot be read or converted; the message says why and what to do."""


def first_keys(keys, n=FIRST):
    """``[k1, k2, ...] (N in total)``: the first ``n`` keys of a long list, for messages."""
    keys = list(keys)
    shown = ', '.join(repr(k) for k in keys[:n])
    more = f', ... ({len(keys)} in total)' if len(keys) > n else f' ({len(keys)} in total)'
    return '[' + shown + ']' + more if keys else '[] (0 in total)'


def mismatch_lines(unexpected, missing, mismatched, missing_note=''):
    """The lines of a "does not fit" message: unexpected keys, missing keys and shape mismatches
    (``'key: checkpoint (..) vs model (..)'``); empty when all three are empty."""
    lines = [f'  unexpected keys: {first_keys(unexpected)}'] if unexpected else []
    if missing:
        lines.append(f'  missing keys{missing_note}: {first_keys(missing)}')
    if mismatched:
        lines.append(f'  shape mismatches ({len(mismatched)}): {"; ".join(mismatched[:FIRST])}')
    return lines


def _unsafe_globals(path):
    try:  # only improves a message; a legacy (non-zip) file cannot be listed
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001
        return 'not listed'


def _looks_like_torch_file(path):
    """torch.save writes a zip archive (torch >= 1.6) or, legacy, a pickle (starts 0x80)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, 'rb') as f:
        return f.read(1) == b'\x80'


def load_source(path, unsafe_pickle=False):
    """Load a checkpoint file on CPU, safely by default.

    ``torch.load(weights_only=True)`` is tried first (with ``argparse.Namespace`` allowed, which
    DINO / iBOT / Mugs store as ``args``, and mmengine's own types, which ``import cotap_mm``
    allow-lists). Files that pickle other Python objects, typically PyTorch-Lightning ``.ckpt``
    files (hyper-parameters as ``omegaconf`` / ``AttributeDict`` objects, callback states, loop
    states), need ``weights_only=False``, which can execute arbitrary code from the file: that
    only happens with ``unsafe_pickle=True`` (``--unsafe-pickle``), for files you trust.

    Args:
        path (str): Checkpoint file (``.pth`` / ``.ckpt`` / ``.pt``; ``.safetensors`` needs the
            ``safetensors`` package).
        unsafe_pickle (bool): Allow the full unpickler. Defaults to False.

    Returns:
        tuple: ``(obj, how)`` with the loaded object and a description of how it was loaded.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise CheckpointConversionError(f'{path}: no such file')
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise CheckpointConversionError(
                f'{path}: reading .safetensors files needs the `safetensors` package '
                '(pip install safetensors)') from e
        return dict(load_file(path, device='cpu')), 'safetensors'
    if not _looks_like_torch_file(path):
        raise CheckpointConversionError(
            f'{path}: not a readable torch checkpoint (neither a torch.save zip archive nor a '
            'legacy pickle); is it a file of another format?')
    import cotap_mm.utils.compat  # noqa: F401  (allow-lists mmengine's checkpoint types)
    # torch < 2.5 (a GPU machine's torch 2.1) has weights_only but no allow-lists
    allow = getattr(torch.serialization, 'safe_globals', contextlib.nullcontext)
    try:
        with allow([Namespace]):
            obj = torch.load(path, map_location='cpu', weights_only=True)
        return obj, 'torch.load(weights_only=True)'
    except Exception as e:  # noqa: BLE001  (also zip/format errors of a non-checkpoint file)
        low = str(e).lower()
        if 'weights only load failed' not in low and 'unsupported global' not in low:
            raise CheckpointConversionError(
                f'{path}: not a readable torch checkpoint ({type(e).__name__}: '
                f'{str(e).strip()[:300]})') from e
        if not unsafe_pickle:
            raise CheckpointConversionError(
                f'{path}: torch.load(weights_only=True) refused this file. It references these '
                f'non-tensor Python objects: {_unsafe_globals(path)}. '
                'This is normal for PyTorch-Lightning .ckpt files (Leopart, the official CoTAP '
                'release), which pickle hyper-parameters and callback/loop states next to the '
                'weights. Loading them needs weights_only=False, which can run arbitrary code '
                'stored in the file: if you trust it, re-run with --unsafe-pickle.') from e
    try:
        obj = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointConversionError(
            f'{path}: could not be loaded even with weights_only=False ({type(e).__name__}: '
            f'{str(e).strip()[:300]}); a missing module of the training code can cause this') from e
    return obj, 'torch.load(weights_only=False) (--unsafe-pickle)'


def is_tensor_dict(d):
    return isinstance(d, dict) and len(d) > 0 and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in d.items())


def flat_state_dict(obj):
    """The tensor dict of a checkpoint object: its ``state_dict`` / ``model`` entry or itself."""
    if not isinstance(obj, dict):
        return None
    for key in ('state_dict', 'model'):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj
