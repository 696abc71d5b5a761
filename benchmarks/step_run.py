"""One run of the training-step benchmark: CoTAP against the plain step on one real batch, the
breakdown, the loader; returns the report that :mod:`.train_report` renders
(docs/benchmarks.md, "Training step throughput"; the command line is
``tools/benchmark_train.py``)."""
import gc
import os
import os.path as osp
import shlex
import time
from typing import List

import torch

from .report import machine_info
from .step_setup import (build_benchmark_cfg, build_loader, build_models, check_benchmark_data,
                         set_threads, warn_if_oversubscribed)
from .step_timing import (breakdown, compare_steps, loader_throughput, make_sync, profile_ops,
                          time_kmeans)

__all__ = ['measure']


def measure(args, data_root: str, root: str, argv: List[str], logger) -> dict:
    """Measure with the options ``args`` of ``tools/benchmark_train.py`` (its namespace; ``argv``
    is recorded as the command) on the data in ``data_root``; ``root``: the checkout."""
    from mmengine.logging import MessageHub
    from mmengine.registry import init_default_scope
    from mmengine.utils import ProgressBar
    init_default_scope('mmpretrain')
    threads = set_threads(args.threads)
    machine = machine_info(args.device, threads)
    warn_if_oversubscribed(threads, args.device, logger)
    check_benchmark_data(data_root)
    cfg, world = build_benchmark_cfg(args.config, data_root, args.arch, args.batch_size,
                                     args.cfg_options, args.world_size, args.amp)
    MessageHub.get_current_instance().update_info('iter', 0)
    batch_size = cfg.train_dataloader.batch_size

    # one real batch, reused by every step (the loader's cost is measured on its own)
    torch.manual_seed(args.seed)
    batch = next(iter(build_loader(cfg, 0, args.seed)))
    models, wrappers = build_models(cfg, args.device, args.seed, args.plain_backbone)
    sync = make_sync(args.device)
    G, L = cfg.model.get('num_crops', (2, 4))
    sizes = [int(batch['inputs'][i].shape[-1]) for i in (0, G)] if L else \
        [int(batch['inputs'][0].shape[-1])]
    crops = f'{G}×{sizes[0]}² + {L}×{sizes[-1]}² per image, 4 images per item'
    logger.info(f'{args.arch}: batch {batch_size}, {crops}, {threads} threads, device '
                f'{args.device}, AMP {args.amp}, per-rank queues {tuple(cfg.model.queue_sizes)} '
                f'(world {world})')
    report = dict(
        command=' '.join(['python tools/benchmark_train.py', *map(shlex.quote, argv)]),
        date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), machine=machine,
        config=dict(config=osp.relpath(args.config, root), arch=args.arch,
                    batch_size=batch_size, crops=crops, device=args.device, amp=args.amp,
                    threads=threads, world_size=world, queue_sizes=list(cfg.model.queue_sizes),
                    plain_backbone=args.plain_backbone, warmup=args.warmup, iters=args.iters,
                    breakdown_iters=args.breakdown_iters))

    report['kmeans_s'] = time_kmeans(models['cotap'], sync)
    bar = ProgressBar(2 * (args.warmup + args.iters))
    report.update(compare_steps(models, wrappers, batch, sync, args.warmup, args.iters,
                                args.device, bar.update))
    print()
    if args.breakdown_iters:
        report['breakdown'] = {
            name: breakdown(models[name], wrappers[name], batch, sync, args.device,
                            args.breakdown_iters) for name in ('cotap', 'plain')}
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
