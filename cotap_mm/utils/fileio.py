"""Small file helpers: atomic checkpoint writes."""
import os
import os.path as osp
import tempfile

import torch

__all__ = ['atomic_save']


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj, path):
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``.

    The object is written to a temporary file in the destination directory (so that the final
    :func:`os.replace` is a same-filesystem rename, which is atomic on POSIX and Windows), flushed
    and fsync'ed, then renamed over ``path``. On any failure (serialisation error, full disk,
    KeyboardInterrupt) the temporary file is removed and ``path`` is left untouched: either the
    previous file or nothing.

    Args:
        obj: Anything ``torch.save`` accepts.
        path (str | os.PathLike): Destination file. Its directory must exist.

    Returns:
        str: The destination path.
    """
    path = os.fspath(path)
    dirname = osp.dirname(osp.abspath(path))
    if not osp.isdir(dirname):
        raise FileNotFoundError(f'atomic_save: the directory of {path!r} does not exist '
                                f'({dirname}); create it first')
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=dirname)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions (0666 & ~umask)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        # BaseException: also clean up on KeyboardInterrupt / SystemExit
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
