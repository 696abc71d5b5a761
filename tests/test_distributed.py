"""Two gloo processes through ``tools/dist_train.sh`` (the tiny CoTAP config of
``tests/test_cotap_train.py``, generated data): the one-time k-means gives the same kernel on both
ranks, queues and prototype banks are per rank, ``list_scope='global'`` gives the CoTAP loss and
gradient of one process holding the whole batch, and DDP runs without
``find_unused_parameters`` because every trainable parameter gets a gradient in every step.

This file is also the custom module the training processes import (``custom_imports``,
``PYTHONPATH=tests``): :class:`DistStateDumpHook` records what the test checks and writes one file
per rank at the end of training.
"""
import os.path as osp
import socket
import subprocess

import pytest
import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook

from cotap_mm.registry import HOOKS, MODELS

TESTS = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(TESTS)
MAX_ITERS = 3  # the banks fill at iteration 2 (k-means), iteration 3 uses the new kernel


def _unwrap(model):
    return getattr(model, 'module', model)


@HOOKS.register_module()
class DistStateDumpHook(Hook):
    """Test-only: records, per rank, the k-means result, the inputs / loss / input gradient of
    the first CoTAP-loss call, which parameters had gradients at every optimizer step, the DDP
    wrapper's settings and the final model state, saved to ``<work_dir>/rank<r>.pt``."""

    def before_train(self, runner) -> None:
        model = _unwrap(runner.model)
        self.record = dict(
            rank=get_dist_info()[0], world=get_dist_info()[1],
            wrapper=type(runner.model).__name__,
            find_unused_parameters=getattr(runner.model, 'find_unused_parameters', None),
            kmeans=[], head=None, steps=[],
            trainable=[n for n, p in model.named_parameters() if p.requires_grad])

        maybe_cluster = model.bank.maybe_cluster

        def record_kmeans(*args, **kwargs):
            kernel = maybe_cluster(*args, **kwargs)
            if kernel is not None:
                self.record['kmeans'].append(kernel.detach().clone())
            return kernel

        model.bank.maybe_cluster = record_kmeans

        head_loss = model.correspondence_head.loss

        def record_head(student, teacher, masks):
            loss = head_loss(student, teacher, masks)
            if self.record['head'] is None:
                # the CoTAP term alone; a collective on every rank (the all-gather's backward)
                grad, = torch.autograd.grad(loss, student, retain_graph=True)
                self.record['head'] = dict(student=student.detach().clone(),
                                           teacher=teacher.detach().clone(),
                                           masks=masks.detach().clone(),
                                           loss=loss.detach().clone(), grad=grad.clone())
            return loss

        model.correspondence_head.loss = record_head

        step = runner.optim_wrapper.step

        def record_step(*args, **kwargs):
            grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
            self.record['steps'].append(dict(
                missing=sorted(n for n, g in grads.items() if g is None),
                nonzero=sorted(n for n, g in grads.items()
                               if g is not None and bool(g.abs().sum() > 0)),
                grads={n: g.detach().clone() for n, g in grads.items() if g is not None}))
            return step(*args, **kwargs)

        runner.optim_wrapper.step = record_step

    def after_train(self, runner) -> None:
        self.record['state_dict'] = {k: v.detach().clone()
                                     for k, v in _unwrap(runner.model).state_dict().items()}
        torch.save(self.record, osp.join(runner.work_dir, f'rank{self.record["rank"]}.pt'))


# -- the test side -------------------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def dist_run(tmp_path_factory):
    """One 2-process gloo run of tools/dist_train.sh; returns the two ranks' records."""
    from test_crash_resume import _env, config_with_hook, make_workspace
    root = make_workspace(tmp_path_factory.mktemp('distributed'))
    config_with_hook(
        root, 'dist.py', __file__, dict(type='DistStateDumpHook'),
        train_cfg=dict(max_iters=MAX_ITERS),
        # one list over both ranks; with the lowest-index tie break and a seeded head the lists
        # can be rebuilt in one process (random tie noise would be drawn per rank)
        model=dict(correspondence_head=dict(list_scope='global', topk_tie_break='lowest_index',
                                            seed=0)))
    env = _env(PORT=str(_free_port()), OMP_NUM_THREADS='1')
    out = subprocess.run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), 'dist.py', '2',
                          '--work-dir', 'work_dirs/dist'], cwd=root, env=env,
                         capture_output=True, text=True, timeout=400)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log
    records = [torch.load(root / f'work_dirs/dist/rank{r}.pt') for r in range(2)]
    return root, records


def test_kmeans_kernel_is_identical_on_both_ranks(dist_run):
    _, (r0, r1) = dist_run
    assert (r0['rank'], r1['rank'], r0['world']) == (0, 1, 2)
    # k-means ran once, when the banks filled, and every rank got rank 0's centres ...
    assert len(r0['kmeans']) == len(r1['kmeans']) == 1
    assert r0['kmeans'][0].shape == (8, 64, 3, 3)
    assert torch.equal(r0['kmeans'][0], r1['kmeans'][0])
    # ... although the banks they were computed from differ (each rank banks its own images)
    s0, s1 = r0['state_dict'], r1['state_dict']
    assert bool(s0['bank.initialized']) and bool(s1['bank.initialized'])
    assert not torch.equal(s0['bank.bank'], s1['bank.bank'])
    # the student and the EMA teacher stay identical across ranks (DDP-averaged gradients)
    for key in s0:
        if key.startswith(('backbone.', 'patch_head.', 'cls_head.', 'teacher.')):
            assert torch.equal(s0[key], s1[key]), key


def test_queues_and_banks_are_per_rank(dist_run):
    _, (r0, r1) = dist_run
    s0, s1 = r0['state_dict'], r1['state_dict']
    # the configured global lengths (1024, 256) are split over the 2 ranks
    assert s0['patch_queue.queue'].shape[0] == s1['patch_queue.queue'].shape[0] == 512
    assert s0['cls_queue.queue'].shape[0] == s1['cls_queue.queue'].shape[0] == 128
    for key in ('patch_queue.num_filled', 'cls_queue.num_filled', 'bank.num_filled'):
        assert int(s0[key]) > 0 and int(s1[key]) > 0, key
    for key in ('patch_queue.queue', 'cls_queue.queue', 'bank.bank'):
        assert not torch.equal(s0[key], s1[key]), key  # not broadcast from rank 0


def test_global_list_equals_one_process_with_the_whole_batch(dist_run):
    """The CoTAP loss of the global list on each rank equals one process's loss on the two
    ranks' batches together; each rank's gradient is world x its slice of that process's (the
    all-gather's backward sums the ranks' identical losses), so DDP's average is exactly the
    one-process gradient."""
    from mmengine.config import Config
    root, (r0, r1) = dist_run
    head_cfg = Config.fromfile(str(root / 'dist.py')).model.correspondence_head
    assert head_cfg.list_scope == 'global'
    head = MODELS.build(dict(head_cfg.to_dict(), list_scope='local'))  # same seed as rank 0
    G = 2

    def whole(key):  # (2 G B, ...) per rank -> (2 G 2B, ...): both ranks' items per (half, crop)
        parts = [r['head'][key].view(2, G, -1, *r['head'][key].shape[1:]) for r in (r0, r1)]
        merged = torch.cat(parts, dim=2)
        return merged.reshape(-1, *merged.shape[3:])

    student = whole('student').requires_grad_(True)
    loss = head(student, whole('teacher'), whole('masks'))
    loss.backward()
    B = r0['head']['student'].shape[0] // (2 * G)
    full_grad = student.grad.view(2, G, 2 * B, *student.shape[1:])
    assert loss > 0 and full_grad.abs().sum() > 0
    for rank, record in enumerate((r0, r1)):
        torch.testing.assert_close(record['head']['loss'], loss.detach(), rtol=1e-6, atol=1e-7)
        grad = record['head']['grad'].view(2, G, B, *student.shape[1:])
        torch.testing.assert_close(grad, 2 * full_grad[:, :, rank * B:(rank + 1) * B],
                                   rtol=1e-5, atol=1e-7)


def test_ddp_without_find_unused_parameters(dist_run):
    """Every trainable parameter has a gradient at every step (so DDP needs no
    find_unused_parameters, and the run above used none), equal on both ranks after the
    all-reduce."""
    _, (r0, r1) = dist_run
    for record in (r0, r1):
        assert record['wrapper'] == 'MMDistributedDataParallel'
        assert record['find_unused_parameters'] is False
        assert len(record['steps']) == MAX_ITERS
        assert 'backbone.oaf.kernel' in record['trainable']
        assert not any(n.startswith('teacher.') for n in record['trainable'])
        for it, step in enumerate(record['steps'], 1):
            assert step['missing'] == [], f'iteration {it}: no gradient for {step["missing"]}'
        # not only present: by the last step every parameter's gradient is non-zero
        assert record['steps'][-1]['nonzero'] == sorted(record['trainable'])
    for it, (a, b) in enumerate(zip(r0['steps'], r1['steps']), 1):
        for name, grad in a['grads'].items():
            torch.testing.assert_close(grad, b['grads'][name], rtol=1e-6, atol=1e-8,
                                       msg=f'iteration {it}: {name}')
