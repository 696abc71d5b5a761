"""The real training loop against its own step: ``tools/train.py`` run for a few hundred
iterations (each iteration's wall time and data wait read from its scalar log), then the same
config's model, optimiser and batches timed step by step in this process, in the steady state
the loop reaches (docs/benchmarks.md, "Loop overhead"; the command line is
``tools/benchmark_loop.py``)."""
import glob
import itertools
import json
import os.path as osp
import statistics
import subprocess
import sys
import time

import torch

from .step_timing import to_steady_state

__all__ = ['loop_times', 'step_times', 'summarize_overhead']


def loop_times(root: str, config: str, work_dir: str, iters: int, options) -> list:
    """Run ``tools/train.py config`` for ``iters`` iterations, logging every one of them
    unsmoothed; returns ``[(iter, seconds, data_seconds), ...]`` from its ``scalars.json``."""
    cmd = [sys.executable, osp.join(root, 'tools', 'train.py'), config, '--work-dir', work_dir,
           '--cfg-options', f'train_cfg.max_iters={iters}', 'default_hooks.logger.interval=1',
           'log_processor.window_size=1', f'default_hooks.checkpoint.interval={iters}', *options]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}')
    logs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not logs:
        raise RuntimeError(f'no scalars.json under {work_dir}: did tools/train.py log?')
    rows = []
    with open(logs[-1]) as f:
        for line in f:
            rec = json.loads(line)
            if 'time' in rec and 'data_time' in rec:
                rows.append((int(rec['iter']), float(rec['time']), float(rec['data_time'])))
    return rows


def step_times(cfg, iters: int, warmup: int, seed: int = 0, num_batches: int = 4) -> list:
    """Seconds of ``iters`` training steps of ``cfg``'s model (``train_step``, then the EMA
    teacher's update where there is one), after ``warmup`` untimed ones, cycling over
    ``num_batches`` real batches of its loader; a CoTAP model starts in the steady state (full
    queues and bank, k-means done)."""
    from mmengine.logging import MessageHub
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import cotap_mm  # noqa: F401  (registers the components)
    from cotap_mm.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    MessageHub.get_current_instance().update_info('iter', 0)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=seed)
    batches = list(itertools.islice(iter(loader), num_batches))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    teacher = getattr(model, 'update_teacher', None)
    if teacher is not None:
        teacher()  # the initial copy, as TeacherEMAHook before the first step
    if hasattr(model, 'patch_queue'):
        to_steady_state(model)
    seconds = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        model.train_step(batches[i % len(batches)], optim_wrapper)
        if teacher is not None:
            teacher()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def summarize_overhead(loop: list, steps: list, skip: int) -> dict:
    """Medians in ms of the loop's iterations after the first ``skip`` (queues and bank
    filling, k-means), of their data wait and of the steps; the loop's overhead over the step."""
    kept = [r for r in loop if r[0] > skip]
    if not kept:
        raise ValueError(f'no logged iteration after the first {skip}; run more iterations')
    loop_ms = 1000 * statistics.median(r[1] for r in kept)
    step_ms = 1000 * statistics.median(steps)
    return dict(step_ms=round(step_ms, 1), loop_ms=round(loop_ms, 1),
                data_ms=round(1000 * statistics.median(r[2] for r in kept), 1),
                loop_over_step=round(loop_ms / step_ms, 3), loop_iters=len(kept),
                step_iters=len(steps))
