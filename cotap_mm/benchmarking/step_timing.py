"""Measuring a training step without a Runner: the steady state (full queues and bank, k-means
done), interleaved timed steps, peak memory, a per-section breakdown from wrapped methods, and the
loader alone. Used by ``tools/benchmark_train.py``; docs/benchmarks.md, "Training step
throughput", says what each number means."""
import contextlib
import ctypes
import gc
import logging
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

__all__ = ['quiet_mmengine', 'to_steady_state', 'time_kmeans', 'make_sync', 'train_step',
           'timed_step', 'peak_memory', 'SectionTimer', 'instrument_cotap', 'instrument_plain',
           'breakdown', 'profile_ops', 'loader_throughput', 'percentile', 'summarize',
           'compare_steps']


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
    if model.bank is not None:
        model.bank.bank.normal_()
        model.bank.num_filled.fill_(model.bank.capacity)
        model.bank.initialized.fill_(True)


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
    model.update_teacher()


def timed_step(model, optim_wrapper, batch, sync) -> float:
    sync()
    start = time.perf_counter()
    train_step(model, optim_wrapper, batch)
    sync()
    return time.perf_counter() - start


def _proc_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL('libc.so.6').malloc_trim(0)


def peak_memory(model, optim_wrapper, batch, device: str) -> Dict[str, int]:
    """Peak memory of one step: ``peak`` (absolute) and ``extra`` (above before the step)."""
    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        train_step(model, optim_wrapper, batch)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return dict(peak=peak, extra=peak - base, method='torch.cuda.max_memory_allocated')
    _malloc_trim()  # return freed heap to the OS so the baseline is the live memory
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak RSS (VmHWM) to the current RSS
    base = _proc_kib('VmRSS')
    train_step(model, optim_wrapper, batch)
    peak = _proc_kib('VmHWM')
    return dict(peak=peak * 1024, extra=max(peak - base, 0) * 1024,
                method='VmHWM - VmRSS (/proc/self/clear_refs, malloc_trim)')


class SectionTimer:
    """Wall time per named section, from wrappers around bound methods and module functions.

    The wrappers synchronise CUDA at both ends, so they are used only in separate, instrumented
    iterations. Sections must not nest (each is timed on its own).
    """

    def __init__(self, sync):
        self.sync = sync
        self.seconds: Dict[str, float] = {}
        self._undo: List[Callable[[], None]] = []

    def _wrap(self, name, fn):
        def wrapped(*a, **k):
            self.sync()
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.sync()
                self.seconds[name] = self.seconds.get(name, 0.) + time.perf_counter() - start
        return wrapped

    def method(self, name: str, obj, attr: str) -> None:
        """Time ``obj.attr(...)`` (an instance attribute shadows the class's method)."""
        if obj is None:
            return
        setattr(obj, attr, self._wrap(name, getattr(obj, attr)))
        self._undo.append(lambda: delattr(obj, attr))

    def function(self, name: str, module, attr: str) -> None:
        """Time a module-level function as looked up by ``module`` (e.g. an import)."""
        original = getattr(module, attr)
        setattr(module, attr, self._wrap(name, original))
        self._undo.append(lambda: setattr(module, attr, original))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


# (section, object as a dotted path from `model`, `teacher` or `optim`, method): what the breakdown
# times; a section may collect several methods. Absent objects (no bank) are skipped.
_STEP_END = (
    ('backward', 'optim', 'backward'),
    ('optimizer step', 'optim', 'step'),
    ('optimizer step', 'optim', 'zero_grad'),
    ('teacher EMA', 'model', 'update_teacher'),
)
PLAIN_SECTIONS = (
    ('data preprocessor', 'model.data_preprocessor', 'forward'),
    ('teacher backbone', 'teacher.backbone', 'forward'),
    ('teacher heads', 'teacher.cls_head', 'forward'),
    ('student backbone', 'model.backbone', 'forward'),
    ('student heads', 'model.cls_head', 'forward'),
) + _STEP_END
COTAP_SECTIONS = PLAIN_SECTIONS[:3] + (
    ('teacher heads', 'teacher.patch_head', 'forward'),
    ('student heads', 'model.patch_head', 'forward'),
    ('bank update / k-means', 'model.bank', 'update'),
    ('bank update / k-means', 'model.bank', 'maybe_cluster'),
    ('CoTAP loss (correspondence head)', 'model.correspondence_head', 'loss'),
    ('inner patch loss', 'model.inner_patch_loss', 'forward'),
    ('inner / intra CLS losses', 'model.inner_cls_loss', 'forward'),
    ('inner / intra CLS losses', 'model.intra_cls_loss', 'forward'),
    ('entropy loss', 'model.entropy_loss', 'forward'),
    ('queue pushes', 'model.patch_queue', 'push'),
    ('queue pushes', 'model.cls_queue', 'push'),
) + PLAIN_SECTIONS[3:]
# functions the algorithm module calls by name: (section, name in cotap_mm.models.algorithms.cotap)
COTAP_FUNCTIONS = (('foreground mask', 'attention_foreground_mask'),
                   ('Sinkhorn', 'sinkhorn_knopp'))


def _instrument(timer: SectionTimer, sections, model, optim_wrapper) -> None:
    roots = dict(model=model, teacher=model.teacher.module, optim=optim_wrapper)
    for name, path, attr in sections:
        root, *attrs = path.split('.')
        obj = roots[root]
        for a in attrs:
            obj = getattr(obj, a, None)
        timer.method(name, obj, attr)


def instrument_cotap(timer: SectionTimer, model, optim_wrapper) -> None:
    import cotap_mm.models.algorithms.cotap as cotap_module
    for name, attr in COTAP_FUNCTIONS:
        timer.function(name, cotap_module, attr)
    _instrument(timer, COTAP_SECTIONS, model, optim_wrapper)


def instrument_plain(timer: SectionTimer, model, optim_wrapper) -> None:
    _instrument(timer, PLAIN_SECTIONS, model, optim_wrapper)


def breakdown(model, optim_wrapper, batch, sync, instrument, iters: int) -> Dict[str, float]:
    """Mean ms per section over ``iters`` instrumented iterations; 'other' is the rest."""
    timer = SectionTimer(sync)
    instrument(timer, model, optim_wrapper)
    total = 0.
    try:
        for _ in range(iters):
            total += timed_step(model, optim_wrapper, batch, sync)
    finally:
        timer.restore()
    ms = {k: 1000 * v / iters for k, v in timer.seconds.items()}
    ms['other (glue, loss parsing, checks)'] = max(1000 * total / iters - sum(ms.values()), 0.)
    ms['total (instrumented)'] = 1000 * total / iters
    return ms


def profile_ops(model, optim_wrapper, batch, device: str, top: int) -> str:
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if device.startswith('cuda'):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
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


def percentile(values: List[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of a non-empty list."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(seconds: List[float]) -> Dict[str, float]:
    ms = [1000 * s for s in seconds]
    return dict(median_ms=statistics.median(ms), p90_ms=percentile(ms, 90), min_ms=min(ms),
                times_ms=ms)


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
