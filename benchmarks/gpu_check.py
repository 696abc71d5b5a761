"""The one-call GPU check: its steps (subprocesses of the checkout's tools, each with a log and a
share of one time budget), its report with the measured CUDA crossover of the CoTAP loss, and the
patch that carries the measured docs sections back (docs/benchmarks.md, "GPU check"; the command
line is ``tools/gpu_check.py``)."""
import difflib
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from typing import List, Tuple

from cotap_mm.utils.fileio import atomic_write_text
from .gpu_goals import crossover, goals
from .report import machine_info
from .step_setup import benchmark_data_options

__all__ = ['LOSS_SIZES', 'plan', 'run_step', 'write_patch', 'run_check']

LOSS_SIZES = (1000, 2048, 4200, 8400, 16800, 65536, 262144, 1048576, 4194304)
Step = Tuple[str, List[List[str]], float]  # (name, commands, share of the budget)


def plan(root: str, out: str, dry: bool) -> List[Step]:
    """The steps of the check in ``root`` (a checkout), writing into ``out``; ``dry``: CPU, tiny."""
    py, tools, data = sys.executable, osp.join(root, 'tools'), osp.join(out, 'data')
    device = 'cpu' if dry else 'cuda'
    tests = [py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-k', 'cuda or amp',
             osp.join(root, 'tests', 'test_continuous_ap_loss.py'),
             osp.join(root, 'tests', 'test_cuda.py')]
    sizes = ['1000', '--impls', 'dense', 'sorted', 'auto'] if dry else map(str, LOSS_SIZES)
    loss = [py, osp.join(tools, 'benchmark_loss.py'), '--device', device, '--sizes', *sizes,
            '--repeats', '1' if dry else '5', '--output', osp.join(out, 'benchmarks.md'),
            '--json', osp.join(out, 'benchmark_loss.json')]
    train_bench = [py, osp.join(tools, 'benchmark_train.py'), '--device', device,
                   '--data-root', data, '--generate-data', '--out', osp.join(out, 'train.json'),
                   '--update-docs', '--docs', osp.join(out, 'benchmarks.md')]
    train_bench += (['--arch', 'tiny', '--iters', '1', '--warmup', '0', '--breakdown-iters', '0',
                     '--num-workers', '0', '--loader-batches', '1', '--image-size', '64']
                    if dry else ['--arch', 'small', '--batch-size', '28', '--amp',
                                 '--num-workers', '8', '--loader-batches', '20',
                                 '--image-size', '320'])
    config = osp.join(root, 'configs', 'smoke/cotap_tiny_synthetic.py' if dry else
                      'cotap_vit-s16_coco.py')
    options = ['model.backbone.init_cfg=None', 'default_hooks.logger.interval=10',
               *(f'{k}={v}' for k, v in benchmark_data_options(data).items())]
    half, total = (1, 2) if dry else (100, 200)
    work = osp.join(out, 'train')
    common = [py, osp.join(tools, 'train.py'), config, '--work-dir', work] + \
        ([] if dry else ['--amp'])
    options.append(f'default_hooks.checkpoint.interval={half}')
    train = [common + ['--cfg-options', f'train_cfg.max_iters={half}', *options],
             common + ['--resume', osp.join(work, f'iter_{half}.pth'), '--cfg-options',
                       f'train_cfg.max_iters={total}', *options]]
    return [('cuda_tests', [tests], 0.12), ('benchmark_loss', [loss], 0.3),
            ('benchmark_train', [train_bench], 0.28), ('train_resume', train, 0.3)]


def run_step(name: str, commands: List[List[str]], budget_s: float, logs: str,
             cwd: str) -> dict:
    """Run the commands of one step in order; stop at the first failure or the budget."""
    log_path = osp.join(logs, f'{name}.log')
    start, status = time.perf_counter(), 'passed'
    with open(log_path, 'w') as log:
        for cmd in commands:
            log.write(f'$ {" ".join(cmd)}\n')
            log.flush()
            left = budget_s - (time.perf_counter() - start)
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                    timeout=max(left, 1)).returncode
            except subprocess.TimeoutExpired:
                status = f'timed out after {budget_s:.0f} s'
                break
            if rc != 0:  # pytest's 5 (nothing collected) counts: on a CPU it means no CUDA test ran
                status = f'failed (exit code {rc})'
                break
    return dict(status=status, seconds=round(time.perf_counter() - start, 1), log=log_path,
                commands=[' '.join(c) for c in commands])


def write_patch(root: str, out: str) -> None:
    """``out/gpu_check.patch``: the docs sections the benchmarks wrote into ``out/benchmarks.md``,
    as a diff against the checkout's docs/benchmarks.md."""
    with open(osp.join(root, 'docs', 'benchmarks.md')) as f:
        old = f.read()
    with open(osp.join(out, 'benchmarks.md')) as f:
        new = f.read()
    diff = difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                'a/docs/benchmarks.md', 'b/docs/benchmarks.md')
    atomic_write_text(osp.join(out, 'gpu_check.patch'), ''.join(diff))


def run_check(root: str, out: str, budget_s: float, dry: bool) -> dict:
    """Run every step within ``budget_s`` (a step that would start with less than half its share
    left is recorded as skipped) and write ``out/gpu_check.json`` (with ``sorted_from_n``, the
    measured CUDA crossover of the loss's ``auto`` impl) and ``out/gpu_check.patch``."""
    import torch
    logs, device = osp.join(out, 'logs'), 'cpu' if dry else 'cuda'
    os.makedirs(logs, exist_ok=True)
    # the benchmarks write their sections into this copy of the docs
    shutil.copyfile(osp.join(root, 'docs', 'benchmarks.md'), osp.join(out, 'benchmarks.md'))
    report = dict(machine=machine_info(device), dry_run=dry, budget_s=budget_s, steps={},
                  date=time.strftime('%Y-%m-%d %H:%M'))
    if not dry:
        report['machine']['gpus'] = torch.cuda.device_count()
    start = time.perf_counter()
    for name, commands, share in plan(root, out, dry):
        left = budget_s - (time.perf_counter() - start)
        if left < 0.5 * share * budget_s:
            report['steps'][name] = dict(status=f'skipped: {left:.0f} s of the budget left')
            continue
        print(f'[gpu_check] {name} ...', flush=True)
        step = run_step(name, commands, min(left, 1.5 * share * budget_s), logs, root)
        report['steps'][name] = step
        print(f'[gpu_check] {name}: {step["status"]} ({step["seconds"]} s)', flush=True)
    report['steps']['list_scope_global_cuda'] = dict(
        status='not run: needs 2 GPUs' if report['machine'].get('gpus', 0) < 2 else
        'not run: run tools/dist_train.sh with list_scope=global on 2 GPUs by hand')
    measured = {}
    for name in ('benchmark_loss', 'train'):
        path = osp.join(out, f'{name}.json')
        measured[name] = json.load(open(path)) if osp.isfile(path) else None
    loss_rows = (measured['benchmark_loss'] or {}).get('rows', [])
    report['sorted_from_n'] = crossover(loss_rows)
    report['goals'] = goals(loss_rows, measured['train'])
    write_patch(root, out)
    atomic_write_text(osp.join(out, 'gpu_check.json'), json.dumps(report, indent=1))
    return report
