"""Small file helpers: atomic writes (checkpoints, pictures, JSON results)."""
import contextlib
import os
import os.path as osp
import tempfile

import torch

__all__ = ['atomic_open', 'atomic_save', 'atomic_write_text']


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path, mode='wb'):
    """Open a temporary file beside ``path``; on a clean exit it is flushed, fsync'ed, given the
    usual permissions (0666 & ~umask, where mkstemp gives 0600) and renamed over ``path``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is
    left untouched: readers see the previous file or nothing, never a partial one. The rename is
    within one directory, hence atomic on POSIX and Windows. The directory must exist.
    """
    path = os.fspath(path)
    dirname = osp.dirname(osp.abspath(path))
    if not osp.isdir(dirname):
        raise FileNotFoundError(f'the directory of {path!r} does not exist ({dirname}); '
                                'create it first')
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=dirname)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_save(obj, path):
    """``torch.save(obj, path)`` that never leaves a partial file at ``path`` (see
    :func:`atomic_open`).

    Args:
        obj: Anything ``torch.save`` accepts.
        path (str | os.PathLike): Destination file. Its directory must exist.

    Returns:
        str: The destination path.
    """
    path = os.fspath(path)
    if not osp.isdir(osp.dirname(osp.abspath(path))):
        raise FileNotFoundError(f'atomic_save: the directory of {path!r} does not exist '
                                f'({osp.dirname(osp.abspath(path))}); create it first')
    with atomic_open(path) as f:
        torch.save(obj, f)
    return path


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`); the directory is created.

    Returns:
        str: The destination path.
    """
    path = os.fspath(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_open(path, 'w') as f:
        f.write(text)
    return path
