"""A CPU training run killed with SIGKILL (a) in the middle of an iteration and (b) in the middle
of a checkpoint write, or (c) stopped by a full disk during a checkpoint write, resumes with ``--resume`` from the last complete checkpoint and ends exactly
like an uninterrupted run: logged losses, weights, teacher, queues, prototype bank, optimizer,
parameter schedulers, data order and random generators.

The runs are ``tools/train.py`` subprocesses of the tiny CoTAP config of
``tests/test_cotap_train.py`` (generated images, ``num_workers=0``). This file is also the custom
module those runs import (``custom_imports``, ``PYTHONPATH=tests``): :class:`CrashProbeHook`
records every iteration and, when the test asks for it through environment variables, blocks at
a chosen point so that the test's SIGKILL lands there deterministically.
"""
import hashlib
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.hooks import Hook

from cotap_mm.engine.hooks import atomic_checkpoint_hook
from cotap_mm.utils.rng import get_rng_state
from cotap_mm.registry import HOOKS
from cotap_mm.utils import fileio

TESTS = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(TESTS)

# environment variables read by CrashProbeHook in the training subprocess
BLOCK_ENV = 'COTAP_TEST_BLOCK_IN'  # 'iter:K' or 'save:FILENAME'
READY_ENV = 'COTAP_TEST_READY'  # file created once the process is blocked


def _fingerprint(obj) -> str:
    """sha1 over every tensor in ``obj`` (nested dicts / lists / tuples), in traversal order."""
    digest = hashlib.sha1()

    def walk(x):
        if isinstance(x, torch.Tensor):
            digest.update(str((x.dtype, tuple(x.shape))).encode())
            digest.update(x.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for key in sorted(x):
                walk(x[key])
        elif isinstance(x, (list, tuple)):
            for item in x:
                walk(item)
        elif isinstance(x, (int, float, str, bytes)):
            digest.update(repr(x).encode())

    walk(obj)
    return digest.hexdigest()


def _rank_suffix() -> str:
    """'' on rank 0 (and single-process runs), '.rank<r>' on the other ranks."""
    from mmengine.dist import get_dist_info
    rank = get_dist_info()[0]
    return f'.rank{rank}' if rank else ''


def _block(reason: str) -> None:
    """Tell the test we are at the kill point (``$COTAP_TEST_READY``, plus ``.rank<r>`` on
    rank r > 0), then wait for its SIGKILL."""
    with open(os.environ[READY_ENV] + _rank_suffix(), 'w') as f:
        f.write(reason)
    while True:
        time.sleep(60)


@HOOKS.register_module()
class CrashProbeHook(Hook):
    """Test-only hook: logs each iteration to ``<work_dir>/probe.jsonl`` (rank r > 0:
    ``probe.rank<r>.jsonl``) and blocks on request.

    Per iteration: the losses (exact floats), a fingerprint of the input batch (data order and
    crops) and of the random generators' state after the step. ``COTAP_TEST_BLOCK_IN``:

    - ``iter:K``: block inside the forward pass of iteration K (1-based), after the student's
      ImageNet pass has updated the prototype bank and before the losses and the update;
    - ``save:NAME``: block inside the atomic write of checkpoint ``NAME`` after its first chunk
      (64 KiB of a ~3 MB file) reached the temporary file.
    """
    priority = 'NORMAL'  # after_train_iter before CheckpointHook (VERY_LOW)

    def before_run(self, runner) -> None:
        self.log_file = osp.join(runner.work_dir, f'probe{_rank_suffix()}.jsonl')
        kind, _, arg = os.environ.get(BLOCK_ENV, '').partition(':')
        self.block_iter = int(arg) if kind == 'iter' else None
        if kind == 'save':
            self._block_in_save(arg)

    @staticmethod
    def _block_in_save(filename: str) -> None:
        fileio.CHUNK_BYTES = 64 << 10
        real_write = os.write

        def write(fd, data):
            written = real_write(fd, data)
            try:
                name = osp.basename(os.readlink(f'/proc/self/fd/{fd}'))
            except OSError:
                return written
            if name.startswith(f'.{filename}.') and name.endswith('.tmp'):
                _block(f'writing {name}')
            return written

        os.write = write

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self.block_iter is not None and runner.iter + 1 == self.block_iter:
            model = getattr(runner.model, 'module', runner.model)
            model.cls_head.register_forward_hook(
                lambda *args: _block(f'in iteration {self.block_iter}'))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        row = dict(iter=runner.iter + 1, losses={k: float(v) for k, v in outputs.items()},
                   batch=_fingerprint(data_batch), rng=_fingerprint(get_rng_state()))
        with open(self.log_file, 'a') as f:
            f.write(json.dumps(row) + '\n')


@HOOKS.register_module()
class FileSizeLimitHook(Hook):
    """Test-only hook: from iteration ``after_iter`` on, no file may grow beyond ``limit_bytes``
    (``RLIMIT_FSIZE``, with SIGXFSZ ignored so that the write fails with EFBIG instead of
    killing the process), as when the disk fills up between two checkpoints."""
    priority = 'NORMAL'

    def __init__(self, after_iter: int, limit_bytes: int):
        self.after_iter, self.limit_bytes = after_iter, limit_bytes

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.after_iter:
            import resource
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit_bytes, self.limit_bytes))


# -- the test side -------------------------------------------------------------------------------

MAX_ITERS, INTERVAL = 4, 2


def make_workspace(root):
    """``root/tiny.py`` (the tiny CoTAP config) and its data (conftest.make_cotap_workspace)."""
    from conftest import make_cotap_workspace  # not at import: the runs import this module
    return make_cotap_workspace(root)


def config_with_hook(root, name, module, hook, **overrides):
    """Write ``root/name``: tiny.py, plus the test module ``module`` (a file under tests/)
    imported, ``hook`` appended to the custom hooks and top-level ``overrides`` (dicts, merged
    into the base's)."""
    from mmengine.config import Config
    module = osp.splitext(osp.basename(module))[0]
    base = Config.fromfile(str(root / 'tiny.py'))
    hooks = [h.to_dict() for h in base.custom_hooks] + [hook]
    lines = ["_base_ = './tiny.py'",
             f"custom_imports = dict(imports=['cotap_mm', {module!r}], "
             'allow_failed_imports=False)',
             f'custom_hooks = {hooks!r}']
    lines += [f'{key} = {value!r}' for key, value in overrides.items()]
    (root / name).write_text('\n'.join(lines) + '\n')


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """Generated data and crash.py: the tiny CoTAP run plus CrashProbeHook."""
    root = make_workspace(tmp_path_factory.mktemp('crash_resume'))
    config_with_hook(root, 'crash.py', __file__, dict(type='CrashProbeHook'),
                     train_cfg=dict(max_iters=MAX_ITERS),
                     default_hooks=dict(checkpoint=dict(interval=INTERVAL)))
    return root


def _env(**extra):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', **extra)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, TESTS, env.get('PYTHONPATH', '')])
    for key in (BLOCK_ENV, READY_ENV):
        if key not in extra:
            env.pop(key, None)
    return env


def _train_cmd(work_dir, *extra):
    return [sys.executable, osp.join(ROOT, 'tools/train.py'), 'crash.py', '--work-dir',
            str(work_dir), *extra]


def _train(root, work_dir, *extra):
    out = subprocess.run(_train_cmd(work_dir, *extra), cwd=root, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out.stdout + out.stderr


@pytest.fixture(scope='module')
def reference(workspace):
    """The uninterrupted run."""
    work_dir = workspace / 'work_dirs/uninterrupted'
    _train(workspace, work_dir)
    return work_dir


def _run_until_blocked(root, work_dir, block):
    """Start a run that blocks at ``block``, wait until it is there, and return the process."""
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    ready = work_dir.parent / f'{work_dir.name}.ready'
    log = open(work_dir.parent / f'{work_dir.name}.log', 'w+')  # a pipe could fill and block
    proc = subprocess.Popen(_train_cmd(work_dir), cwd=root,
                            env=_env(**{BLOCK_ENV: block, READY_ENV: str(ready)}),
                            stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    deadline = time.monotonic() + 240
    while not ready.exists():
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f'the run ended (rc={proc.returncode}) before reaching {block}:\n'
                        + log.read()[-3000:])
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f'the run did not reach {block} in time')
        time.sleep(0.1)
    return proc


def _sigkill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.log.close()
    assert proc.returncode == -signal.SIGKILL


def _probe(work_dir, rank=0):
    """iteration -> the last record of it (a resumed run rewrites the iterations it redoes)."""
    with open(work_dir / f'probe{f".rank{rank}" if rank else ""}.jsonl') as f:
        return {row['iter']: row for row in map(json.loads, f)}


def _assert_same(a, b, where):
    """Exact, recursive equality of checkpoint contents (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def _assert_resumed_run_equals(reference, work_dir):
    a = torch.load(reference / f'iter_{MAX_ITERS}.pth', map_location='cpu')
    b = torch.load(work_dir / f'iter_{MAX_ITERS}.pth', map_location='cpu')
    state = a['state_dict']
    # the state that must survive the crash is really there and in use
    assert bool(state['bank.initialized']) and int(state['bank.num_filled']) > 0
    assert int(state['patch_queue.num_filled']) > 0 and int(state['cls_queue.num_filled']) > 0
    assert int(state['teacher.steps']) == MAX_ITERS + 1
    assert a['optimizer']['state'] and a['param_schedulers'] and 'rng_state' in a
    for key in ('state_dict', 'optimizer', 'param_schedulers', 'rng_state'):
        _assert_same(a[key], b[key], key)
    assert a['meta']['iter'] == b['meta']['iter'] == MAX_ITERS
    # per iteration: losses (exact), the batch (data order and crops) and the generators
    probe_a, probe_b = _probe(reference), _probe(work_dir)
    assert sorted(probe_a) == sorted(probe_b) == list(range(1, MAX_ITERS + 1))
    assert probe_a[MAX_ITERS]['losses']['loss_inner_patch'] > 0
    for it in probe_a:
        assert probe_a[it] == probe_b[it], f'iteration {it}'


def test_sigkill_inside_an_iteration_resumes_exactly(workspace, reference):
    work_dir = workspace / 'work_dirs/killed_in_iter'
    proc = _run_until_blocked(workspace, work_dir, f'iter:{MAX_ITERS}')
    _sigkill(proc)
    # killed inside iteration 4: iteration 3 finished, the last checkpoint is iter_2
    assert sorted(_probe(work_dir)) == list(range(1, MAX_ITERS))
    assert not (work_dir / f'iter_{MAX_ITERS}.pth').exists()
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / f'iter_{INTERVAL}.pth')

    log = _train(workspace, work_dir, '--resume')
    assert f'Auto resumed from the latest checkpoint {work_dir}/iter_{INTERVAL}.pth' in log
    _assert_resumed_run_equals(reference, work_dir)


def test_sigkill_inside_a_checkpoint_write_resumes_from_the_last_complete_one(workspace,
                                                                             reference):
    work_dir = workspace / 'work_dirs/killed_in_save'
    name = f'iter_{MAX_ITERS}.pth'
    proc = _run_until_blocked(workspace, work_dir, f'save:{name}')
    # blocked in the middle of the write: a partial temporary file, nothing under the final name
    temps = [p for p in work_dir.iterdir() if p.name.startswith(f'.{name}.')]
    assert len(temps) == 1 and 0 < temps[0].stat().st_size < (reference / name).stat().st_size
    _sigkill(proc)
    assert not (work_dir / name).exists() and temps[0].exists()
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / f'iter_{INTERVAL}.pth')
    assert sorted(_probe(work_dir)) == list(range(1, MAX_ITERS + 1))

    log = _train(workspace, work_dir, '--resume')
    assert f'Removed the temporary file of an interrupted write: {temps[0]}' in log
    assert f'Auto resumed from the latest checkpoint {work_dir}/iter_{INTERVAL}.pth' in log
    assert not [p for p in work_dir.iterdir() if p.name.endswith('.tmp')]
    _assert_resumed_run_equals(reference, work_dir)


def test_disk_full_during_a_checkpoint_write_loses_nothing(workspace, reference):
    """The write of iter_4.pth fails for lack of space: the run stops with an error naming the
    file, iter_2.pth (the only one kept, max_keep_ckpts=1) and last_checkpoint are intact, no
    partial file is left, and a resume once there is space ends like the uninterrupted run."""
    from mmengine.config import Config
    hooks = [h.to_dict() for h in Config.fromfile(str(workspace / 'crash.py')).custom_hooks]
    hooks.append(dict(type='FileSizeLimitHook', after_iter=MAX_ITERS - 1, limit_bytes=1 << 20))
    (workspace / 'disk_full.py').write_text(
        "_base_ = './crash.py'\n"
        f'custom_hooks = {hooks!r}\n'
        'default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))\n')
    work_dir = workspace / 'work_dirs/disk_full'
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), 'disk_full.py', '--work-dir',
           str(work_dir)]
    out = subprocess.run(cmd, cwd=workspace, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0
    name = f'iter_{MAX_ITERS}.pth'
    assert f'could not write the checkpoint {work_dir}/{name}: File too large' in out.stderr
    assert f'still names the previous checkpoint ({work_dir}/iter_{INTERVAL}.pth)' in out.stderr
    assert sorted(p.name for p in work_dir.iterdir() if p.is_file()) == [
        'disk_full.py', f'iter_{INTERVAL}.pth', 'last_checkpoint', 'probe.jsonl'
    ]  # nothing partial, no temporary file
    assert atomic_checkpoint_hook.is_complete_checkpoint(work_dir / f'iter_{INTERVAL}.pth')
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / f'iter_{INTERVAL}.pth')

    (workspace / 'disk_full.py').write_text(
        "_base_ = './crash.py'\ndefault_hooks = dict(checkpoint=dict(max_keep_ckpts=1))\n")
    resumed = subprocess.run(cmd + ['--resume'], cwd=workspace, env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_resumed_run_equals(reference, work_dir)
    assert not (work_dir / f'iter_{INTERVAL}.pth').exists()  # now beyond max_keep_ckpts=1


# -- the atomic writer and the resume checks, in process -----------------------------------------


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / 'sub' / 'iter_2.pth'
    fileio.atomic_write_bytes(b'old content', path)
    assert path.read_bytes() == b'old content' and (path.stat().st_mode & 0o777) != 0o600
    monkeypatch.setattr(fileio, 'CHUNK_BYTES', 4)
    real_write, calls = os.write, []

    def failing_write(fd, data):  # the disk fills up after the first chunk
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(28, 'No space left on device')
        return real_write(fd, data)

    monkeypatch.setattr(os, 'write', failing_write)
    with pytest.raises(OSError, match='No space left'):
        fileio.atomic_write_bytes(b'new, longer content', path)
    assert path.read_bytes() == b'old content'
    assert sorted(p.name for p in path.parent.iterdir()) == ['iter_2.pth']  # no temp file left


def _runner(work_dir):
    from types import SimpleNamespace
    return SimpleNamespace(work_dir=str(work_dir), _resume=True, _load_from=None)


def test_before_run_removes_temp_files_and_repairs_the_pointer(tmp_path):
    hook = atomic_checkpoint_hook.AtomicCheckpointHook(interval=2, by_epoch=False)
    good, broken = tmp_path / 'iter_2.pth', tmp_path / 'iter_4.pth'
    torch.save({'x': torch.ones(3)}, good)
    broken.write_bytes(good.read_bytes()[:100])  # a write killed under the final name
    temp = tmp_path / '.iter_6.pth.123-0123abcd.tmp'
    temp.write_bytes(b'partial')
    keep = tmp_path / 'notes.tmp'  # not ours: left alone
    keep.write_text('x')
    pointer = tmp_path / 'last_checkpoint'

    pointer.write_text(str(broken))
    hook.before_run(_runner(tmp_path))
    assert not temp.exists() and keep.exists()
    assert pointer.read_text() == str(good)
    hook.before_run(_runner(tmp_path))  # a valid pointer is left as it is
    assert pointer.read_text() == str(good)

    pointer.write_text('')  # a pointer write killed after the truncation
    hook.before_run(_runner(tmp_path))
    assert pointer.read_text() == str(good)

    good.unlink()
    hook.before_run(_runner(tmp_path))  # nothing complete to resume from: start from scratch
    assert not pointer.exists()
