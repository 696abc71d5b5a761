"""Step throughput of CoTAP against a plain DINO-style step, with a breakdown and the loader.

    .venv/bin/python tools/benchmark_train.py --arch tiny --threads 1          # seconds, CPU
    .venv/bin/python tools/benchmark_train.py --arch small --batch-size 4 --threads 1 --iters 3
    .venv/bin/python tools/benchmark_train.py --device cuda --amp --batch-size 28 --num-workers 8
    ... --out work_dirs/benchmark_train/report.json --update-docs
    .venv/bin/python tools/benchmark_train.py --from-json report.json --update-docs  # no timing

What is measured and how (steady state, interleaved timing, peak memory, breakdown, loader, the
plain baseline :class:`cotap_mm.models.algorithms.DINOBaseline`): docs/benchmarks.md, "Training
step throughput", whose measured subsections this tool rewrites. ``--threads`` (default: all
cores) is recorded; on a busy CPU machine use 1.
"""
import argparse
import contextlib
import copy
import ctypes
import gc
import json
import logging
import os
import os.path as osp
import shlex
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # allow running without an installed cotap_mm
    sys.path.insert(0, ROOT)

from cotap_mm.models.algorithms import DINOBaseline  # noqa: E402
from cotap_mm.utils import benchmark_report as report_lib  # noqa: E402
from cotap_mm.utils.benchmark_report import (fmt_bytes, machine_info,  # noqa: E402
                                             markdown_table, section_markers)
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'cotap_vit-s16_coco.py')
DEFAULT_DATA = osp.join(ROOT, 'work_dirs', 'benchmark_train', 'data')
MARK_BEGIN, MARK_END = section_markers('benchmark_train')
RELEASED_GLOBAL_BATCH = 112

# --arch tiny: the 2-layer 64-d test ViT with heads, crops and memories shrunk like the tests
# (tests/test_cotap_train.py), so the whole benchmark runs in seconds on a CPU.
TINY_OPTIONS = {
    'model.backbone.arch': 'tiny',
    'model.backbone.img_size': 64,
    'model.backbone.num_prototypes': 8,
    'model.patch_head': dict(in_channels=128, num_prototypes=32, hidden_channels=64,
                             bottleneck_channels=16),
    'model.cls_head': dict(in_channels=128, num_prototypes=48, hidden_channels=64,
                           bottleneck_channels=16),
    'model.correspondence_head': dict(pool_sizes=(2, 4), topk=3, num_neg_draws=2),
    'model.bank': dict(capacity=16, num_insert=4, kmeans_iters=20),
    'model.queue_sizes': (8192, 2048),
    'model.queue_inserts': (64, 8),
    'train_dataloader.dataset.view_pipeline': [
        dict(type='CoTAPMultiCrop', size_crops=(64, 32), nmb_crops=(2, 4))],
}


# -- set-up --------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=DEFAULT_CONFIG, help='CoTAP training config')
    p.add_argument('--arch', choices=('tiny', 'small'), default='small',
                   help="'small': the config as is (ViT-S/16, 224/96 crops); 'tiny': the test "
                   'model with shrunk heads and 64/32 crops')
    p.add_argument('--batch-size', type=int, default=None,
                   help='items per step (each item = 2 kNN pairs x (G + L) crops); default: '
                   'the config\'s')
    p.add_argument('--world-size', type=int, default=None,
                   help='divide the global queue lengths by this (default: 112 / batch size, '
                   'the released global batch)')
    p.add_argument('--plain-backbone', choices=('same', 'vit'), default='same',
                   help="the plain step's backbone: 'same' = CoTAP's (with the OAF), 'vit' = "
                   'the bare ViT (with_oaf=False)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda[:i]'")
    p.add_argument('--amp', action='store_true',
                   help='fp16 autocast + GradScaler (mmengine AmpOptimWrapper); needs CUDA')
    p.add_argument('--threads', type=int, default=None,
                   help='torch intra-op threads (default: the number of cores)')
    p.add_argument('--warmup', type=int, default=2, help='untimed iterations of each step')
    p.add_argument('--iters', type=int, default=5, help='timed iterations of each step')
    p.add_argument('--breakdown-iters', type=int, default=1,
                   help='instrumented CoTAP and plain iterations for the breakdown (0: none)')
    p.add_argument('--profile-ops', type=int, default=0, metavar='N',
                   help='also print torch.profiler\'s top N ops of one CoTAP step')
    p.add_argument('--data-root', default=None,
                   help='folder with coco/, imagenet/ and nns/nns_{coco,imagenet}.npz (default: '
                   'generated synthetic scenes in work_dirs/benchmark_train/data)')
    p.add_argument('--generate-data', action='store_true',
                   help='generate the synthetic scenes and kNN files into --data-root when it '
                   'has no kNN files yet')
    p.add_argument('--image-size', type=int, default=256,
                   help='side of the generated synthetic scenes')
    p.add_argument('--num-workers', type=int, default=2, help='dataloader workers')
    p.add_argument('--loader-batches', type=int, default=10,
                   help='batches timed for the loader throughput (0: skip the loader)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='config overrides, as in tools/train.py')
    p.add_argument('--out', default=None, help='write the report as JSON here')
    p.add_argument('--from-json', nargs='+', default=None, metavar='REPORT',
                   help='measure nothing: print (and with --update-docs write) the tables of '
                   'reports saved with --out, e.g. from a GPU machine')
    p.add_argument('--update-docs', action='store_true',
                   help='write the table into docs/benchmarks.md between the benchmark_train '
                   'markers')
    p.add_argument('--docs', default=osp.join(ROOT, 'docs', 'benchmarks.md'),
                   help='the markdown file --update-docs writes')
    args = p.parse_args(argv)
    for name in ('iters', 'warmup', 'breakdown_iters', 'loader_batches', 'num_workers'):
        if getattr(args, name) < 0:
            p.error(f'--{name.replace("_", "-")} must be >= 0')
    if args.iters < 1:
        p.error('--iters must be >= 1')
    if args.batch_size is not None and args.batch_size < 1:
        p.error('--batch-size must be >= 1')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--device {args.device}: CUDA is not available on this machine')
    if args.amp and not args.device.startswith('cuda'):
        p.error('--amp needs --device cuda (mmengine\'s AmpOptimWrapper asserts a GPU)')
    if args.threads is not None and args.threads < 1:
        p.error('--threads must be >= 1')
    return args


def set_threads(threads: Optional[int]) -> int:
    """Fix torch's intra-op threads: on a small shared machine oversubscription makes timings
    meaningless, so the count is always explicit and recorded."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def warn_if_oversubscribed(threads: int, device: str, logger) -> bool:
    """Warn when the CPU step's threads plus the machine's load exceed its cores.

    Every elementwise op is an OpenMP parallel region that waits for all its threads; when a
    thread has no free core, each region waits for a scheduler slice. On the 2-core development
    machine under a load of ~3.5, ``--threads 2`` made the data preprocessor ~100x slower than
    ``--threads 1`` (7.4 s vs 66 ms per call), so CPU timings with too many threads say nothing.
    """
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    busy = not device.startswith('cuda') and threads > 1 and load + threads > cores + 0.5
    if busy:
        logger.warning(f'{threads} torch threads on {cores} cores with a load average of '
                       f'{load:.1f}: threads will wait for cores and the timings will be '
                       'meaningless; use --threads 1 (or fewer threads) on a busy machine')
    return busy


def build_cfg(args, data_root: str):
    """The training config with the benchmark's overrides (no init checkpoint, data root)."""
    from mmengine.config import Config, DictAction
    if not osp.isfile(args.config):
        raise SystemExit(f'--config {args.config}: no such file')
    cfg = Config.fromfile(args.config)
    if cfg.get('model', {}).get('type') != 'CoTAP':
        raise SystemExit(f'--config {args.config}: model.type must be CoTAP, got '
                         f'{cfg.get("model", {}).get("type")!r}')
    options = {
        'model.backbone.init_cfg': None,
        'train_dataloader.dataset.coco.dataset.data_root': osp.join(data_root, 'coco'),
        'train_dataloader.dataset.coco.nns_file': osp.join(data_root, 'nns', 'nns_coco.npz'),
        'train_dataloader.dataset.imagenet.dataset.data_root': osp.join(data_root, 'imagenet'),
        'train_dataloader.dataset.imagenet.nns_file': osp.join(data_root, 'nns',
                                                               'nns_imagenet.npz'),
        'train_dataloader.dataset.coco.num_neighbors': 3,
        'train_dataloader.dataset.imagenet.num_neighbors': 3,
    }
    if args.arch == 'tiny':
        options.update(TINY_OPTIONS)
    if args.batch_size:
        options['train_dataloader.batch_size'] = args.batch_size
    cfg.merge_from_dict(options)
    if args.cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--o', *args.cfg_options]).o)
    # a fixed momentum schedule: there is no Runner (and no max_iters) here
    cfg.model.teacher_momentum_steps = cfg.model.get('teacher_momentum_steps') or 1000
    batch = cfg.train_dataloader.batch_size
    world = args.world_size or max(1, round(RELEASED_GLOBAL_BATCH / batch))
    cfg.model.queue_sizes = tuple(max(1, int(q) // world) for q in cfg.model.queue_sizes)
    # AMP only where asked (mmengine's AmpOptimWrapper asserts CUDA)
    cfg.optim_wrapper.type = 'AmpOptimWrapper' if args.amp else 'OptimWrapper'
    if not args.amp:
        cfg.optim_wrapper.pop('loss_scale', None)
    return cfg, world


def ensure_data(data_root: str, image_size: int, logger) -> None:
    """Generate synthetic scenes and their kNN files once (skipped when they exist)."""
    nns = [osp.join(data_root, 'nns', f'nns_{s}.npz') for s in ('coco', 'imagenet')]
    if all(osp.isfile(f) for f in nns):
        return
    py = sys.executable
    logger.info(f'generating synthetic scenes and kNN files in {data_root} (once)')
    commands = [[py, osp.join(ROOT, 'tools', 'make_synthetic_scenes.py'), data_root,
                 '--size', str(image_size), '--num-coco', '64', '--num-imagenet', '64',
                 '--num-seg-train', '0', '--num-seg-val', '0', '--force']]
    for folder, out in (('coco/train2017', nns[0]), ('imagenet/train', nns[1])):
        commands.append([py, osp.join(ROOT, 'tools', 'precompute_knn.py'),
                         osp.join(data_root, folder), out, '--arch', 'tiny', '--k', '4',
                         '--image-size', '64', '--num-workers', '0'])
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f'generating the benchmark data failed: {" ".join(cmd)}\n'
                             f'{proc.stderr[-2000:]}\nPass real data with --data-root instead.')


def check_data(data_root: str) -> None:
    for rel in ('coco', 'imagenet', 'nns/nns_coco.npz', 'nns/nns_imagenet.npz'):
        if not osp.exists(osp.join(data_root, rel)):
            raise SystemExit(f'--data-root {data_root}: missing {rel} (expected coco/, '
                             'imagenet/ and nns/nns_{coco,imagenet}.npz, see docs/data.md)')


def build_loader(cfg, num_workers: int, seed: int, device: str = 'cpu'):
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.num_workers = num_workers
    loader_cfg.persistent_workers = num_workers > 0
    loader_cfg.pin_memory = bool(loader_cfg.get('pin_memory')) and str(device).startswith('cuda')
    return Runner.build_dataloader(loader_cfg, seed=seed)


# -- models --------------------------------------------------------------------------------------

def build_models(cfg, args):
    """The CoTAP model, the plain model and an optimiser wrapper for each (same config)."""
    from mmengine.optim import build_optim_wrapper
    from cotap_mm.registry import MODELS
    with quiet_mmengine():  # per-parameter init and paramwise logs
        return _build_models(cfg, args, MODELS, build_optim_wrapper)


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


def _build_models(cfg, args, MODELS, build_optim_wrapper):
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    cotap = MODELS.build(copy.deepcopy(cfg.model))
    cotap.init_weights()
    backbone = copy.deepcopy(cfg.model.backbone)
    if args.plain_backbone == 'vit':
        backbone.with_oaf = False
    plain = DINOBaseline(backbone, copy.deepcopy(cfg.model.cls_head),
                          MODELS.build(copy.deepcopy(cfg.model.data_preprocessor)),
                          num_crops=cfg.model.get('num_crops', (2, 4)),
                          teacher_momentum=cfg.model.get('teacher_momentum', (0.9997, 0.9999)),
                          momentum_steps=cfg.model.teacher_momentum_steps)
    plain.init_weights()
    cotap.to(device).train()
    plain.to(device).train()
    cotap.update_teacher()  # the initial copy, as TeacherEMAHook before the first step
    plain.update_teacher()
    to_steady_state(cotap)
    wrappers = {name: build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
                for name, model in (('cotap', cotap), ('plain', plain))}
    return dict(cotap=cotap, plain=plain), wrappers


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


# -- measurement ---------------------------------------------------------------------------------

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


def instrument_cotap(timer: SectionTimer, model, optim_wrapper) -> None:
    import cotap_mm.models.algorithms.cotap as cotap_module
    teacher = model.teacher.module
    timer.method('data preprocessor', model.data_preprocessor, 'forward')
    timer.method('teacher backbone', teacher.backbone, 'forward')
    timer.method('teacher heads', teacher.patch_head, 'forward')
    timer.method('teacher heads', teacher.cls_head, 'forward')
    timer.function('foreground mask', cotap_module, 'attention_foreground_mask')
    timer.method('student backbone', model.backbone, 'forward')
    timer.method('student heads', model.patch_head, 'forward')
    timer.method('student heads', model.cls_head, 'forward')
    timer.method('bank update / k-means', model.bank, 'update')
    timer.method('bank update / k-means', model.bank, 'maybe_cluster')
    timer.function('Sinkhorn', cotap_module, 'sinkhorn_knopp')
    timer.method('CoTAP loss (correspondence head)', model.correspondence_head, 'loss')
    timer.method('inner patch loss', model.inner_patch_loss, 'forward')
    timer.method('inner / intra CLS losses', model.inner_cls_loss, 'forward')
    timer.method('inner / intra CLS losses', model.intra_cls_loss, 'forward')
    timer.method('entropy loss', model.entropy_loss, 'forward')
    timer.method('queue pushes', model.patch_queue, 'push')
    timer.method('queue pushes', model.cls_queue, 'push')
    _instrument_common(timer, model, optim_wrapper)


def instrument_plain(timer: SectionTimer, model, optim_wrapper) -> None:
    teacher = model.teacher.module
    timer.method('data preprocessor', model.data_preprocessor, 'forward')
    timer.method('teacher backbone', teacher.backbone, 'forward')
    timer.method('teacher heads', teacher.cls_head, 'forward')
    timer.method('student backbone', model.backbone, 'forward')
    timer.method('student heads', model.cls_head, 'forward')
    _instrument_common(timer, model, optim_wrapper)


def _instrument_common(timer, model, optim_wrapper):
    timer.method('backward', optim_wrapper, 'backward')
    timer.method('optimizer step', optim_wrapper, 'step')
    timer.method('optimizer step', optim_wrapper, 'zero_grad')
    timer.method('teacher EMA', model, 'update_teacher')


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


# -- report --------------------------------------------------------------------------------------

def table_rows(report: dict) -> Dict[str, List[List[str]]]:
    """The report as rows of strings: 'steps', 'breakdown' and 'loader' tables."""
    steps = []
    for name, label in (('cotap', 'CoTAP step'), ('plain', 'plain DINO-style step')):
        t, m = report['timing'][name], report['memory'][name]
        steps.append([label, f'{t["median_ms"]:.1f}', f'{t["p90_ms"]:.1f}',
                      f'{1000 / t["median_ms"]:.2f}', fmt_bytes(m['extra']),
                      fmt_bytes(m['peak'])])
    r = report['ratio']
    steps.append(['ratio CoTAP / plain', f'{r["median"]:.2f}×', f'{r["p90"]:.2f}×', '',
                  f'{r["memory_extra"]:.2f}×', f'{r["memory_peak"]:.2f}×'])
    rows = dict(steps=steps, breakdown=[], loader=[])
    bd = report.get('breakdown') or {}
    if bd:
        names = list(bd['cotap'])
        names += [n for n in bd['plain'] if n not in names]
        names.sort(key=lambda n: n.startswith(('other', 'total')))  # keep those last
        total = bd['cotap'].get('total (instrumented)', 0) or 1
        for n in names:
            c, p = bd['cotap'].get(n), bd['plain'].get(n)
            share = '' if c is None or n.startswith('total') else f'{100 * c / total:.0f} %'
            rows['breakdown'].append([n, '' if c is None else f'{c:.1f}', share,
                                      '' if p is None else f'{p:.1f}'])
    if report.get('kmeans_s') is not None:
        rows['breakdown'].append(['(one-time k-means, not per step)',
                                  f'{1000 * report["kmeans_s"]:.1f}', '', ''])
    ld = report.get('loader')
    if ld:
        step_bps = 1000 / report['timing']['cotap']['median_ms']
        workers = f'{ld["num_workers"]} worker{"s" if ld["num_workers"] != 1 else ""}'
        rows['loader'] = [
            [f'loader, {workers}', f'{ld["batches_per_s"]:.2f}', f'{ld["images_per_s"]:.1f}',
             f'{ld["batches_per_s"] / step_bps:.2f}×'],
            ['CoTAP step', f'{step_bps:.2f}', f'{step_bps * ld["items_per_batch"] * 4:.1f}',
             '1.00×'],
        ]
    return rows


HEADERS = dict(
    steps=['step', 'median ms/iter', 'p90 ms/iter', 'iter/s', 'peak extra memory',
           'peak memory'],
    breakdown=['section (instrumented iteration)', 'CoTAP ms', 'CoTAP share', 'plain ms'],
    loader=['producer / consumer', 'batches/s', 'source images/s', 'vs CoTAP step'],
)


def describe(report: dict) -> str:
    c = report['config']
    m = report['machine']
    where = m.get('gpu') or f'{m["cpu"]}, {m["cores"]} cores'
    threads = m['torch_threads']
    load = ', '.join(str(x) for x in m['load_average'])
    load_end = ', '.join(str(x) for x in m.get('load_average_end', []))
    return (f'{where}; {threads} torch thread{"s" if threads != 1 else ""}; torch {m["torch"]}, '
            f'Python {m["python"]}; device `{m["device"]}`, {"AMP fp16" if c["amp"] else "fp32"}; '
            f'load average (1, 5, 15 min) {load} at the start, {load_end} at the end; '
            f'{report["date"]}.')


def summary(report: dict) -> str:
    c = report['config']
    plain = "CoTAP's (with OAF)" if c['plain_backbone'] == 'same' else 'bare ViT (no OAF)'
    plural = lambda n, word: f'{n} {word}{"s" if n != 1 else ""}'  # noqa: E731
    return (f'median / p90 of {plural(c["iters"], "interleaved iteration")} of each step after '
            f'{plural(c["warmup"], "warm-up iteration")}, one reused batch; plain step backbone: '
            f'{plain}; per-rank queues {tuple(c["queue_sizes"])} (global / {c["world_size"]}); '
            'bank and queues full, k-means done; breakdown: mean of '
            f'{plural(c.get("breakdown_iters", 1), "instrumented iteration")} (noisier than the '
            'timed medians).')


def heading(report: dict) -> str:
    """One docs subsection per setting; a rerun of the same setting replaces it."""
    c, m = report['config'], report['machine']
    where = (f'GPU ({m["gpu"]})' if m.get('gpu') else 'CPU')
    threads = f', {c["threads"]} thread{"s" if c["threads"] > 1 else ""}' if not m.get('gpu') \
        else ''
    plain = ', plain step on the bare ViT' if c.get('plain_backbone') == 'vit' else ''
    return (f'### {where}{", AMP" if c["amp"] else ", fp32"}, `--arch {c["arch"]}`, batch '
            f'{c["batch_size"]}{threads}{plain}')


def overhead(report: dict, top: int = 5) -> str:
    """The sections that make up most of CoTAP's extra time over the plain step."""
    bd = report.get('breakdown')
    if not bd:
        return ''
    diffs = {k: v - bd['plain'].get(k, 0.) for k, v in bd['cotap'].items()
             if not k.startswith('total')}
    extra = bd['cotap']['total (instrumented)'] - bd['plain']['total (instrumented)']
    parts = sorted(diffs.items(), key=lambda kv: -kv[1])[:top]
    return (f'CoTAP minus plain (instrumented iteration): {extra:+.1f} ms; largest parts: ' +
            ', '.join(f'{k} {v:+.1f} ms' for k, v in parts) + '.')


def render_markdown(report: dict) -> str:
    c = report['config']
    rows = table_rows(report)
    lines = [
        heading(report), '',
        f'Command: `{report["command"]}`', '',
        f'Crops: {c["crops"].replace(" crops per image", " per image")}.', '',
        f'Machine: {describe(report)}', '',
        f'Setting: {summary(report)}', '',
    ]
    lines += markdown_table(HEADERS['steps'], rows['steps'])
    lines += ['', f'Peak memory: {report["memory"]["cotap"]["method"]}.', '']
    if rows['breakdown']:
        lines += markdown_table(HEADERS['breakdown'], rows['breakdown']) + ['']
        lines += [overhead(report), '']
    if rows['loader']:
        lines += markdown_table(HEADERS['loader'], rows['loader']) + ['']
    return '\n'.join(lines).rstrip('\n')


def print_tables(report: dict) -> None:
    rows = table_rows(report)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a dependency of mmengine, but stay usable without it
        print(render_markdown(report))
        return
    console = Console()
    console.print(f'[bold]{report["command"]}[/bold]\n{describe(report)}\n'
                  f'{summary(report)}')
    for key, title in (('steps', 'time and memory per iteration'),
                       ('breakdown', 'CoTAP step breakdown'), ('loader', 'data loader')):
        if not rows[key]:
            continue
        table = Table(title=title)
        for i, h in enumerate(HEADERS[key]):
            table.add_column(h, justify='left' if i == 0 else 'right')
        for r in rows[key]:
            table.add_row(*r)
        console.print(table)
        if key == 'breakdown':
            console.print(overhead(report))


def merge_runs(body_old: str, body_new: str) -> str:
    """Keep one subsection per ``### `--arch ...`, batch ...`` heading; the new one replaces the
    old one of the same heading."""
    def split(body):
        parts, order = {}, []
        for chunk in ('\n' + body).split('\n### ')[1:]:
            heading = chunk.split('\n', 1)[0]
            parts[heading] = '### ' + chunk.strip('\n')
            order.append(heading)
        return parts, order
    old, order = split(body_old)
    new, new_order = split(body_new)
    old.update(new)
    order += [h for h in new_order if h not in order]
    return '\n\n'.join(old[h] for h in order)


def read_section(path: str) -> str:
    return report_lib.read_section(path, 'benchmark_train')


def write_section(path: str, body: str) -> None:
    """Put the measured subsections between the benchmark_train markers of ``path``."""
    report_lib.write_section(path, 'benchmark_train', body, 'Training step throughput')


# -- main ----------------------------------------------------------------------------------------

def run(args, logger) -> dict:
    from mmengine.logging import MessageHub
    from mmengine.utils import ProgressBar
    import cotap_mm  # noqa: F401  (registers the components)
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    threads = set_threads(args.threads)
    machine = machine_info(args.device, threads)
    warn_if_oversubscribed(threads, args.device, logger)
    data_root = args.data_root or DEFAULT_DATA
    if args.data_root is None or args.generate_data:
        ensure_data(data_root, args.image_size, logger)
    check_data(data_root)
    cfg, world = build_cfg(args, data_root)
    MessageHub.get_current_instance().update_info('iter', 0)
    batch_size = cfg.train_dataloader.batch_size

    # one real batch, reused by every step (loader cost is measured on its own)
    torch.manual_seed(args.seed)
    batch = next(iter(build_loader(cfg, 0, args.seed)))
    models, wrappers = build_models(cfg, args)
    sync = make_sync(args.device)
    G, L = cfg.model.get('num_crops', (2, 4))
    sizes = [int(batch['inputs'][i].shape[-1]) for i in (0, G)] if L else \
        [int(batch['inputs'][0].shape[-1])]
    crops = f'{G}×{sizes[0]}² + {L}×{sizes[-1]}² per image, 4 images per item'
    logger.info(f'{args.arch}: batch {batch_size}, {crops}, {threads} threads, device '
                f'{args.device}, AMP {args.amp}, per-rank queues {tuple(cfg.model.queue_sizes)} '
                f'(world {world})')

    report = dict(
        command=' '.join(['python tools/benchmark_train.py', *map(shlex.quote, args.argv)]),
        date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), machine=machine,
        config=dict(config=osp.relpath(args.config, ROOT), arch=args.arch,
                    batch_size=batch_size, crops=crops, device=args.device, amp=args.amp,
                    threads=threads, world_size=world, queue_sizes=list(cfg.model.queue_sizes),
                    plain_backbone=args.plain_backbone, warmup=args.warmup, iters=args.iters,
                    breakdown_iters=args.breakdown_iters))

    report['kmeans_s'] = time_kmeans(models['cotap'], sync)
    order = ('cotap', 'plain')
    total = 2 * (args.warmup + args.iters)
    bar = ProgressBar(total)
    for _ in range(args.warmup):
        for name in order:
            train_step(models[name], wrappers[name], batch)
            sync()
            bar.update()
    times = {name: [] for name in order}
    for _ in range(args.iters):  # ABAB: load changes hit both step types alike
        for name in order:
            times[name].append(timed_step(models[name], wrappers[name], batch, sync))
            bar.update()
    print()
    report['timing'] = {name: summarize(times[name]) for name in order}
    pairs = [c / p for c, p in zip(times['cotap'], times['plain'])]
    report['timing']['paired_ratios'] = pairs
    report['memory'] = {name: peak_memory(models[name], wrappers[name], batch, args.device)
                        for name in order}
    t, m = report['timing'], report['memory']
    report['ratio'] = dict(
        median=t['cotap']['median_ms'] / t['plain']['median_ms'],
        p90=t['cotap']['p90_ms'] / t['plain']['p90_ms'],
        median_of_paired=statistics.median(pairs),
        memory_extra=m['cotap']['extra'] / max(m['plain']['extra'], 1),
        memory_peak=m['cotap']['peak'] / max(m['plain']['peak'], 1))
    if args.breakdown_iters:
        report['breakdown'] = dict(
            cotap=breakdown(models['cotap'], wrappers['cotap'], batch, sync, instrument_cotap,
                            args.breakdown_iters),
            plain=breakdown(models['plain'], wrappers['plain'], batch, sync, instrument_plain,
                            args.breakdown_iters))
    if args.profile_ops:
        report['profile_ops'] = profile_ops(models['cotap'], wrappers['cotap'], batch,
                                            args.device, args.profile_ops)
    if args.loader_batches:
        del models, wrappers
        gc.collect()
        loader = build_loader(cfg, args.num_workers, args.seed, args.device)
        ld = loader_throughput(loader, args.loader_batches, batch_size)
        ld.update(num_workers=args.num_workers, items_per_batch=batch_size)
        report['loader'] = ld
    report['machine']['load_average_end'] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(argv=None):
    from mmengine.logging import MMLogger
    raw = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(raw)
    args.argv = raw
    logger = (MMLogger.get_instance('benchmark_train')
              if MMLogger.check_instance_created('benchmark_train') else
              MMLogger.get_instance('benchmark_train', log_level='INFO'))
    if args.from_json:
        reports = []
        for path in args.from_json:
            try:
                with open(path) as f:
                    reports.append(json.load(f))
            except (OSError, ValueError) as e:
                raise SystemExit(f'--from-json {path}: cannot read a report ({e})')
    else:
        reports = [run(args, logger)]
    for report in reports:
        print_tables(report)
        if report.get('profile_ops'):
            print(report['profile_ops'])
    if args.out and not args.from_json:
        atomic_write_text(args.out, json.dumps(reports[0], indent=1))
        logger.info(f'report written to {args.out}')
    if args.update_docs:
        body = read_section(args.docs)
        for report in reports:
            body = merge_runs(body, render_markdown(report))
        write_section(args.docs, body)
        logger.info(f'table written to {args.docs}')
    return reports[-1]


if __name__ == '__main__':
    main()
