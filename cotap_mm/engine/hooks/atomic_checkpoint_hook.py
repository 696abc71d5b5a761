"""Checkpoints that are either complete or absent, so that a killed run resumes from the last
complete one.

mmengine 0.10.7 writes ``iter_N.pth`` with ``open(path, 'wb').write(...)`` and then the
``last_checkpoint`` pointer the same way. A process killed during either write (SIGKILL, OOM
killer, preemption, power loss) leaves a truncated checkpoint under the final name, or an empty
pointer, and ``--resume`` then fails or loads a broken file. Here:

- :class:`AtomicLocalBackend` (mmengine file backend ``'atomic_local'``) writes every file to a
  temporary file in the same directory, ``fsync``\\ s it, renames it over the final name with
  ``os.replace`` (atomic on POSIX within one file system) and ``fsync``\\ s the directory;
- :class:`AtomicCheckpointHook` (a ``CheckpointHook``) saves through that backend for local
  directories, rewrites ``last_checkpoint`` the same way and only after the checkpoint is in
  place, and before a run removes the temporary files a killed write left behind and checks the
  pointer a resume will follow.

Why a hook plus a file backend rather than a Runner subclass or patching mmengine: the Runner
assembles the checkpoint dict (model, optimizer, schedulers, message hub, ``before_save_checkpoint``
additions) and hands the bytes to ``file_backend.put``, and the hook chooses that backend through
its ``backend_args``. Replacing the backend is the one place where every checkpoint the hook
saves (periodic, last, best) becomes atomic without copying the Runner's checkpoint code, and the
hook is a drop-in replacement of ``CheckpointHook`` in ``default_hooks``.
"""
import logging
import os
import os.path as osp
import re
import zipfile
from collections import deque
from pathlib import Path
from typing import Optional, Union

from mmengine.dist import barrier, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from cotap_mm.registry import HOOKS
from cotap_mm.utils.fileio import atomic_write_bytes, remove_stale_temp_files
from .rank_state_hook import RankStateHook

__all__ = ['AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointWriteError',
           'is_complete_checkpoint']


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); nothing was lost."""

def is_complete_checkpoint(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file: torch's zip format ends with the zip
    central directory, so a truncated file fails this check (cheap: the end of the file only)."""
    return osp.isfile(path) and zipfile.is_zipfile(path)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic :meth:`put` / :meth:`put_text`.

    Select it with ``backend_args=dict(backend='atomic_local')`` wherever mmengine takes
    ``backend_args``; :class:`AtomicCheckpointHook` does so itself.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)


register_backend('atomic_local', AtomicLocalBackend, force=True)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose checkpoints and ``last_checkpoint`` pointer are written
    atomically, so that ``--resume`` after a kill continues from the last complete checkpoint.

    Takes the arguments of mmengine's ``CheckpointHook``. Differences:

    - with a local ``out_dir`` and no ``backend_args`` / ``file_client_args`` of the user, every
      checkpoint it saves (periodic, last, best) goes through :class:`AtomicLocalBackend`;
      other storage (``s3://...``, a user-chosen backend) is left to that backend;
    - ``last_checkpoint`` is replaced atomically, after the checkpoint it names is complete;
    - every rank's state (random generators, queues, bank) is gathered into the checkpoint
      through :class:`RankStateHook`, when the run has one;
    - checkpoints beyond ``max_keep_ckpts`` are removed after the new one is complete, not
      before, and a write that fails (full disk, file size limit) raises
      :class:`CheckpointWriteError` saying so, with the previous checkpoint and the pointer
      intact and no partial file left;
    - before the run (rank 0), temporary files of a killed write are deleted from the work and
      checkpoint directories, and when the run resumes from ``last_checkpoint`` a pointer that is
      empty or names a missing or truncated file (e.g. written by the plain ``CheckpointHook``)
      is moved to the newest complete checkpoint there, with a warning.
    """

    def _local_out_dir(self, runner) -> Optional[str]:
        """The directory checkpoints go to, as ``before_train`` will set it; None if remote."""
        out_dir = runner.work_dir if self.out_dir is None else os.fspath(self.out_dir)
        if '://' in out_dir:
            return None
        if out_dir != runner.work_dir:
            out_dir = osp.join(out_dir, osp.basename(runner.work_dir.rstrip(osp.sep)))
        return out_dir

    def before_run(self, runner) -> None:
        # before_run comes before Runner.load_or_resume, so the pointer is fixed before it is read
        if is_main_process():
            out_dir = self._local_out_dir(runner)
            for directory in {runner.work_dir, out_dir} - {None}:
                for path in remove_stale_temp_files(directory):
                    print_log(f'Removed the temporary file of an interrupted write: {path}',
                              logger='current', level=logging.WARNING)
            if (getattr(runner, '_resume', False) and getattr(runner, '_load_from', None) is None
                    and out_dir is not None):
                self._repair_pointer(runner.work_dir, out_dir)
        barrier()  # the other ranks read the pointer in load_or_resume

    def _repair_pointer(self, work_dir: str, out_dir: str) -> None:
        pointer = osp.join(work_dir, 'last_checkpoint')
        if not osp.exists(pointer):
            return
        with open(pointer) as f:
            target = f.read().strip()
        if target and ('://' in target or is_complete_checkpoint(target)):
            return
        newest = self._newest_complete_checkpoint(out_dir)
        problem = 'is empty' if not target else f'names a missing or incomplete file ({target})'
        if newest is None:
            os.remove(pointer)
            print_log(f'{pointer} {problem} and {out_dir} holds no complete checkpoint: '
                      'removed it, the run starts from scratch.', logger='current',
                      level=logging.WARNING)
            return
        atomic_write_bytes(newest.encode(), pointer)
        print_log(f'{pointer} {problem}; resuming from the newest complete checkpoint {newest} '
                  'instead.', logger='current', level=logging.WARNING)

    def _newest_complete_checkpoint(self, out_dir: str) -> Optional[str]:
        if not osp.isdir(out_dir):
            return None
        head, _, tail = self.filename_tmpl.partition('{}')
        pattern = re.compile(re.escape(head) + r'(\d+)' + re.escape(tail) + '$')
        steps = sorted(((int(m.group(1)), name) for name in os.listdir(out_dir)
                        for m in [pattern.match(name)] if m), reverse=True)
        for _, name in steps:
            path = osp.join(out_dir, name)
            if is_complete_checkpoint(path):
                return path
        return None

    def before_train(self, runner) -> None:
        if (self.backend_args is None and self.file_client_args is None
                and self._local_out_dir(runner) is not None):
            self.backend_args = dict(backend='atomic_local')
        super().before_train(runner)

    def _save_checkpoint_with_step(self, runner, step, meta):
        # mmengine's method, reordered so that nothing is lost when the write fails (a full disk,
        # a file size limit, a kill): the checkpoint is written first (atomic through the
        # backend), then the pointer is moved to it (atomically), and only then is the checkpoint
        # beyond max_keep_ckpts removed; the disk must hold max_keep_ckpts + 1 of them for a
        # moment. The message hub records the new checkpoint before the write, as in mmengine
        # (the checkpoint then lists itself), and is rolled back when the write fails.
        filename = self.filename_tmpl.format(step)
        path = self.file_backend.join_path(self.out_dir, filename)
        previous = (getattr(self, 'last_ckpt', None), list(getattr(self, 'keep_ckpt_ids', [])))
        expired = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                expired.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        self.last_ckpt = path
        runner.message_hub.update_info('last_ckpt', path)
        for hook in runner.hooks:  # every rank's state to the writer (collective: all ranks)
            if isinstance(hook, RankStateHook):
                hook.gather(runner)
        try:
            runner.save_checkpoint(
                self.out_dir, filename, self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        except OSError as e:
            self.last_ckpt, keep = previous
            if self.max_keep_ckpts > 0:
                self.keep_ckpt_ids = deque(keep, self.max_keep_ckpts)
                runner.message_hub.update_info('keep_ckpt_ids', keep)
            if self.last_ckpt is not None:
                runner.message_hub.update_info('last_ckpt', self.last_ckpt)
            raise CheckpointWriteError(
                f'could not write the checkpoint {path}: {e.strerror or e} (errno {e.errno}). '
                'Nothing was lost: no partial file is left, and '
                f'{osp.join(runner.work_dir, "last_checkpoint")} still names the previous '
                f'checkpoint ({self.last_ckpt or "none yet"}). Free space in {self.out_dir} '
                '(or raise the file size limit) and resume with --resume.') from e
        if is_main_process():
            atomic_write_bytes(str(path).encode(), osp.join(runner.work_dir, 'last_checkpoint'))
            for old_step in expired:
                old = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old_step))
                if self.file_backend.isfile(old):
                    self.file_backend.remove(old)
                elif self.file_backend.isdir(old):  # deepspeed-style directory checkpoints
                    self.file_backend.rmtree(old)
