"""Measuring a training step without a Runner: the steady state (full queues and bank, k-means
done), interleaved timed steps, peak memory, a per-section breakdown from torch.profiler, and the
loader alone. Used by ``tools/benchmark_train.py``; docs/benchmarks.md, "Training step
throughput", says what each number means."""
import contextlib
import logging
import statistics
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from .report import peak_memory_of

__all__ = ['quiet_mmengine', 'to_steady_state', 'time_kmeans', 'make_sync', 'train_step',
           'timed_step', 'peak_memory', 'breakdown', 'profile_ops', 'loader_throughput',
           'summarize', 'compare_steps']

LABEL = 'cotap::'  # the prefix of the algorithms' record_function sections (and of ours here)


@contextlib.contextmanager
def quiet_mmengine():
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@torch.no_grad()
def to_steady_state(model) -> None:
    """Full queues and prototype bank, k-means done: the state of almost every iteration.

    (Queue contents only need the right shape and scale: Sinkhorn's cost does not depend on the
    values.)
    """
    for queue in (model.patch_queue, model.cls_queue):
        queue.queue.copy_(F.normalize(torch.randn_like(queue.queue), dim=1))
        queue.num_filled.fill_(queue.capacity)
    bank = model.bank  # None without an object-aware filter
    if bank is not None:
        bank.bank.normal_()
        bank.num_filled.fill_(bank.capacity)
        bank.initialized.fill_(True)


def time_kmeans(model, sync) -> Optional[float]:
    """Seconds of the one-time k-means on a full bank (restores the bank's state)."""
    bank = model.bank
    if bank is None:
        return None
    bank.initialized.fill_(False)
    sync()
    start = time.perf_counter()
    kernel = bank.maybe_cluster()
    sync()
    seconds = time.perf_counter() - start
    assert kernel is not None and bool(bank.initialized)
    return seconds


def make_sync(device: str) -> Callable[[], None]:
    if device.startswith('cuda'):
        return torch.cuda.synchronize
    return lambda: None


def train_step(model, optim_wrapper, batch) -> None:
    """One iteration as the Runner runs it: ``train_step`` then the teacher's EMA update."""
    model.train_step(batch, optim_wrapper)
    with record_function(LABEL + 'teacher EMA'):
        model.update_teacher()


def timed_step(model, optim_wrapper, batch, sync) -> float:
    sync()
    start = time.perf_counter()
    train_step(model, optim_wrapper, batch)
    sync()
    return time.perf_counter() - start


def peak_memory(model, optim_wrapper, batch, device: str) -> Dict[str, int]:
    """Peak memory of one step: ``peak`` (absolute) and ``extra`` (above before the step)."""
    return peak_memory_of(lambda: train_step(model, optim_wrapper, batch),
                          device.startswith('cuda'))


def _section(name: str) -> Optional[str]:
    """The breakdown section of a profiler event (None: not one)."""
    if name.startswith(LABEL):
        return name[len(LABEL):]
    if name.startswith('autograd::engine::evaluate_function'):
        return 'backward'
    if name.startswith(('Optimizer.step#', 'Optimizer.zero_grad#')):
        return 'optimizer step'
    return None


def _label_data_preprocessor(model) -> list:
    """Forward (pre-)hooks that run the data preprocessor, which the algorithms call before their
    own sections, inside a ``cotap::data preprocessor`` range; returns their handles."""
    opened = []

    def enter(module, args):
        opened.append(record_function(LABEL + 'data preprocessor'))
        opened[-1].__enter__()

    def leave(module, args, out):
        opened.pop().__exit__(None, None, None)

    module = model.data_preprocessor
    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]


def _profile(device: str):
    cuda = [ProfilerActivity.CUDA] if device.startswith('cuda') else []
    return profile(activities=[ProfilerActivity.CPU] + cuda)


def breakdown(model, optim_wrapper, batch, sync, device: str, iters: int) -> Dict[str, float]:
    """Mean ms per section over ``iters`` profiled iterations, 'other' the rest of the step.

    The sections are torch.profiler's ``cotap::*`` ranges (the algorithm's, the data
    preprocessor's and the teacher EMA's), the backward pass (the autograd engine's functions)
    and the optimiser's step and zero_grad; a range inside another section counts as part of
    it. Their time is CPU wall time on the CPU, the time of the kernels they launched on CUDA.
    """
    cuda = device.startswith('cuda')
    handles = _label_data_preprocessor(model)
    total = 0.
    try:
        with _profile(device) as prof:
            for _ in range(iters):
                total += timed_step(model, optim_wrapper, batch, sync)
    finally:
        for handle in handles:
            handle.remove()
    us: Dict[str, float] = {}
    for event in prof.events():
        section = _section(event.name)
        parent = event.cpu_parent
        while section is not None and parent is not None:  # only the outermost section counts
            section = None if _section(parent.name) else section
            parent = parent.cpu_parent
        if section is not None:
            us[section] = us.get(section, 0.) + (event.device_time_total if cuda else
                                                 event.cpu_time_total)
    ms = {k: v / 1000 / iters for k, v in us.items()}
    ms['other (glue, loss parsing, checks)'] = max(1000 * total / iters - sum(ms.values()), 0.)
    ms['total (profiled)'] = 1000 * total / iters
    return ms


def profile_ops(model, optim_wrapper, batch, device: str, top: int) -> str:
    """torch.profiler's table of the ``top`` operators (self time) of one step."""
    with _profile(device) as prof:
        train_step(model, optim_wrapper, batch)
        make_sync(device)()
    key = 'self_cuda_time_total' if device.startswith('cuda') else 'self_cpu_time_total'
    return prof.key_averages().table(sort_by=key, row_limit=top)


def loader_throughput(loader, num_batches: int, items_per_batch: int) -> Dict[str, float]:
    """Batches/s of the dataloader alone, after the first batch (worker start-up)."""
    from mmengine.utils import ProgressBar
    it = iter(loader)
    start = time.perf_counter()
    next(it)
    first = time.perf_counter() - start
    bar = ProgressBar(num_batches)
    start = time.perf_counter()
    done = 0
    for _ in range(num_batches):
        try:
            next(it)
        except StopIteration:  # a short synthetic set: start a new epoch
            it = iter(loader)
            next(it)
        done += 1
        bar.update()
    seconds = time.perf_counter() - start
    print()
    batches_per_s = done / seconds
    return dict(first_batch_s=first, batches_per_s=batches_per_s,
                items_per_s=batches_per_s * items_per_batch,
                images_per_s=batches_per_s * items_per_batch * 4)


def summarize(seconds: List[float]) -> Dict[str, float]:
    ms = [1000 * s for s in seconds]
    return dict(median_ms=statistics.median(ms), p90_ms=float(np.percentile(ms, 90)),
                min_ms=min(ms), times_ms=ms)


def compare_steps(models: Dict[str, torch.nn.Module], wrappers: Dict, batch, sync, warmup: int,
                  iters: int, device: str, progress: Optional[Callable[[], None]] = None) -> dict:
    """Time the ``'cotap'`` and ``'plain'`` steps on one batch, interleaved (ABAB, so that a
    change of load hits both alike) after ``warmup`` untimed iterations of each, then measure
    their peak memory. Returns ``timing`` (per step and the paired ratios), ``memory`` and
    ``ratio`` (CoTAP over plain: median, p90, median of the pairs, extra and peak memory)."""
    order = ('cotap', 'plain')
    for _ in range(warmup):
        for name in order:
            train_step(models[name], wrappers[name], batch)
            sync()
            if progress:
                progress()
    times = {name: [] for name in order}
    for _ in range(iters):
        for name in order:
            times[name].append(timed_step(models[name], wrappers[name], batch, sync))
            if progress:
                progress()
    timing = {name: summarize(times[name]) for name in order}
    pairs = [c / p for c, p in zip(times['cotap'], times['plain'])]
    timing['paired_ratios'] = pairs
    memory = {name: peak_memory(models[name], wrappers[name], batch, device) for name in order}
    ratio = dict(
        median=timing['cotap']['median_ms'] / timing['plain']['median_ms'],
        p90=timing['cotap']['p90_ms'] / timing['plain']['p90_ms'],
        median_of_paired=statistics.median(pairs),
        memory_extra=memory['cotap']['extra'] / max(memory['plain']['extra'], 1),
        memory_peak=memory['cotap']['peak'] / max(memory['plain']['peak'], 1))
    return dict(timing=timing, memory=memory, ratio=ratio)
