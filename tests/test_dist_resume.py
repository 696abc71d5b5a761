"""Two gloo processes with two loader workers each (tools/dist_train.sh, the tiny CoTAP config),
killed with SIGKILL (a) in the middle of an iteration and (b) in the middle of a checkpoint
write, resume with ``--resume`` and end exactly like an uninterrupted 2-process run: weights,
teacher, optimizer, and every rank's queues, prototype bank and random generators
(``rank_states``, :class:`RankStateHook`), with the same batches and losses on both ranks at
every iteration (crops drawn on per-item seeds, :class:`ItemSeedSampler`). A 2-rank checkpoint
resumed by one process warns and continues.

The training processes import test_crash_resume (CrashProbeHook: per-rank records, blocking)."""
import os
import os.path as osp
import signal
import subprocess
import time

import pytest
import torch

from test_crash_resume import (BLOCK_ENV, INTERVAL, MAX_ITERS, READY_ENV, ROOT,
                               _assert_resumed_run_equals, _assert_same, _env, _probe,
                               config_with_hook, make_workspace)
from test_distributed import _free_port

WORLD = 2


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = make_workspace(tmp_path_factory.mktemp('dist_resume'))
    config_with_hook(root, 'crash.py', osp.join(osp.dirname(__file__), 'test_crash_resume.py'),
                     dict(type='CrashProbeHook'), train_cfg=dict(max_iters=MAX_ITERS),
                     default_hooks=dict(checkpoint=dict(interval=INTERVAL)),
                     train_dataloader=dict(num_workers=2, persistent_workers=True))
    return root


def _cmd(work_dir, *extra, world=WORLD):
    return ['bash', osp.join(ROOT, 'tools/dist_train.sh'), 'crash.py', str(world),
            '--work-dir', str(work_dir), *extra]


def _dist_env(**extra):
    return _env(PORT=str(_free_port()), OMP_NUM_THREADS='1', **extra)


def _train(root, work_dir, *extra, world=WORLD):
    out = subprocess.run(_cmd(work_dir, *extra, world=world), cwd=root, env=_dist_env(),
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return out.stdout + out.stderr


@pytest.fixture(scope='module')
def reference(workspace):
    work_dir = workspace / 'work_dirs/uninterrupted'
    log = _train(workspace, work_dir)
    assert 'Distributed training: True' in log
    return work_dir


def _process_tree(pid):
    """``pid`` and its descendants, parents first (read from /proc): torchrun starts each rank
    in a session of its own, so killing the launcher's process group would leave the ranks (and
    their loader workers) running, blocked, after the test."""
    children = {}
    for entry in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{entry}/stat') as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # not a process, or gone
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop(0))
        todo += children.get(tree[-1], [])
    return tree


def _kill_job(proc):
    """SIGKILL the whole job, as a crashed node: launcher, ranks, loader workers."""
    for pid in _process_tree(proc.pid):  # the launcher first: it cannot restart a rank
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is already gone
        pass


def _kill_when_blocked(root, work_dir, block, ranks):
    """Start the 2-process run, wait until ``ranks`` are blocked at ``block``, SIGKILL the whole
    job (launcher, trainers, loader workers)."""
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    ready = work_dir.parent / f'{work_dir.name}.ready'
    log = open(work_dir.parent / f'{work_dir.name}.log', 'w+')
    proc = subprocess.Popen(_cmd(work_dir), cwd=root, start_new_session=True, stdout=log,
                            stderr=subprocess.STDOUT,
                            env=_dist_env(**{BLOCK_ENV: block, READY_ENV: str(ready)}))
    files = [ready.parent / (ready.name + (f'.rank{r}' if r else '')) for r in ranks]
    deadline = time.monotonic() + 300
    while not all(f.exists() for f in files):
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill_job(proc)
            log.seek(0)
            pytest.fail(f'the run did not reach {block} (rc={proc.poll()}):\n' + log.read()[-4000:])
        time.sleep(0.1)
    _kill_job(proc)
    proc.wait(timeout=60)
    log.close()


def _assert_all_ranks_equal(reference, work_dir):
    _assert_resumed_run_equals(reference, work_dir)  # rank 0's weights, optimizer, records
    a = torch.load(reference / f'iter_{MAX_ITERS}.pth', map_location='cpu')
    b = torch.load(work_dir / f'iter_{MAX_ITERS}.pth', map_location='cpu')
    assert len(a['rank_states']) == WORLD
    _assert_same(a['rank_states'], b['rank_states'], 'rank_states')
    # the ranks really hold different queues (per-rank state that a rank-0-only checkpoint
    # would lose) and rank 0's entry is what the state_dict holds
    r0, r1 = (s['buffers'] for s in a['rank_states'])
    assert not torch.equal(r0['patch_queue.queue'], r1['patch_queue.queue'])
    assert torch.equal(r0['patch_queue.queue'], a['state_dict']['patch_queue.queue'])
    assert sorted({k.split('.')[0] for k in r0}) == ['bank', 'cls_queue', 'patch_queue']
    probe_a, probe_b = _probe(reference, rank=1), _probe(work_dir, rank=1)
    assert sorted(probe_a) == sorted(probe_b) == list(range(1, MAX_ITERS + 1))
    for it in probe_a:
        assert probe_a[it] == probe_b[it], f'rank 1, iteration {it}'


def test_two_ranks_killed_inside_an_iteration_resume_exactly(workspace, reference):
    work_dir = workspace / 'work_dirs/killed_in_iter'
    _kill_when_blocked(workspace, work_dir, f'iter:{MAX_ITERS}', ranks=(0, 1))
    assert not (work_dir / f'iter_{MAX_ITERS}.pth').exists()
    log = _train(workspace, work_dir, '--resume')
    assert f'Auto resumed from the latest checkpoint {work_dir}/iter_{INTERVAL}.pth' in log
    assert f'Skipped the {INTERVAL} trained batches without loading them' in log
    _assert_all_ranks_equal(reference, work_dir)


def test_two_ranks_killed_inside_a_checkpoint_write_resume_exactly(workspace, reference):
    work_dir = workspace / 'work_dirs/killed_in_save'
    _kill_when_blocked(workspace, work_dir, f'save:iter_{MAX_ITERS}.pth', ranks=(0, ))
    assert not (work_dir / f'iter_{MAX_ITERS}.pth').exists()
    assert [p for p in work_dir.iterdir() if p.name.endswith('.tmp')]  # the killed write
    log = _train(workspace, work_dir, '--resume')
    assert 'Removed the temporary file of an interrupted write' in log
    _assert_all_ranks_equal(reference, work_dir)


def test_resume_with_another_world_size_warns_and_continues(workspace, reference):
    work_dir = workspace / 'work_dirs/one_process'
    log = _train(workspace, work_dir, '--resume', str(reference / f'iter_{INTERVAL}.pth'),
                 world=1)
    assert f'written by {WORLD} ranks and is resumed by 1' in log
    ckpt = torch.load(work_dir / f'iter_{MAX_ITERS}.pth', map_location='cpu')
    assert len(ckpt['rank_states']) == 1 and ckpt['meta']['iter'] == MAX_ITERS
