"""Atomic file writes (checkpoints, pictures, JSON results, kNN files): the one writer of the
package; nothing it writes is ever seen half-written."""
import contextlib
import os
import os.path as osp
import re
import secrets
from typing import Union

import torch

__all__ = [
    'atomic_open', 'atomic_save', 'atomic_write_text', 'atomic_write_bytes', 'atomic_copy',
    'remove_stale_temp_files', 'TMP_PATTERN'
]

# temporary files: `.<final name>.<pid>-<8 hex>.tmp` next to the final file; hidden, and never
# matching a checkpoint name, so nothing that scans for checkpoints picks one up
TMP_PATTERN = re.compile(r'^\.(?P<target>.+)\.\d+-[0-9a-f]{8}\.tmp$')
# bytes per os.write call of atomic_write_bytes; os.write may write less than asked, so the
# loop also handles short writes
CHUNK_BYTES = 16 << 20


def _temp_path(path: str) -> str:
    directory, name = osp.split(path)
    return osp.join(directory, f'.{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp')


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover (e.g. Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover (some file systems refuse fsync on directories)
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode='wb'):
    """Open a temporary file beside ``path``; on a clean exit it is flushed, fsync'ed, renamed
    over ``path`` and the directory fsync'ed, so the rename survives a power cut.

    On any exception (KeyboardInterrupt and a full disk included) the temporary file is removed
    and ``path`` is left untouched: readers see the previous file or nothing, never a partial
    one. A process killed meanwhile leaves the temporary file behind
    (:func:`remove_stale_temp_files`). The rename is within one directory, hence atomic on POSIX
    and Windows. The file gets the permissions ``open(path, 'w')`` would give (0666 & ~umask).
    The directory must exist.
    """
    path = osp.abspath(os.fspath(path))
    dirname = osp.dirname(path)
    if not osp.isdir(dirname):
        raise FileNotFoundError(f'the directory of {path!r} does not exist ({dirname}); '
                                'create it first')
    tmp = _temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(dirname)


def atomic_write_bytes(data: Union[bytes, bytearray, memoryview], path) -> None:
    """Write ``data`` to ``path`` (its directory created) through :func:`atomic_open`: ``path``
    holds either its old content or all of ``data``, never a part."""
    path = os.fspath(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_open(path, 'wb') as f:
        view = memoryview(data).cast('B')
        offset = 0
        while offset < len(view):
            offset += os.write(f.fileno(), view[offset:offset + CHUNK_BYTES])


def remove_stale_temp_files(directory) -> list:
    """Delete the temporary files of killed :func:`atomic_open` writes in ``directory``.

    Call it only when no write into ``directory`` is in progress (e.g. before a run starts).

    Returns:
        list[str]: the removed paths.
    """
    directory = os.fspath(directory)
    if not osp.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        path = osp.join(directory, name)
        if TMP_PATTERN.match(name) and osp.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


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


def atomic_copy(src, dst):
    """Copy the file ``src`` to ``dst`` atomically (see :func:`atomic_open`).

    Returns:
        str: The destination path.
    """
    import shutil
    with open(src, 'rb') as fin, atomic_open(dst, 'wb') as fout:
        shutil.copyfileobj(fin, fout)
    return os.fspath(dst)
