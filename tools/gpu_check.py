"""One call that checks cotap_mm on a GPU machine and measures what only a GPU can tell.

    python tools/gpu_check.py --out OUT [--budget-s 540] [--dry-run]

(``bash tools/gpu_check.sh`` installs the environment first from a prepared wheel folder and then
runs this.) Steps, each a subprocess with its log in ``OUT/logs/``, within one time budget (a step
that would start with too little of it left is recorded as skipped, not run):

1. ``cuda_tests``: the CUDA tests (loss exactness on CUDA against the float64 CPU reference, ties
   included; an AMP training step); ``list_scope='global'`` is tested by tests/test_distributed.py
   on CPU and needs two GPUs here, so with one GPU it is recorded as not run.
2. ``benchmark_loss``: tools/benchmark_loss.py over n = 1,000 ... 4,194,304; the CUDA ``auto``
   crossover (the smallest n from which ``sorted`` is not slower than ``dense`` at every measured
   length) is derived from it.
3. ``benchmark_train``: tools/benchmark_train.py, ViT-S/16, batch 28, AMP, CoTAP against the plain
   step, with the loader at 8 workers; its generated data (synthetic scenes in the documented
   layout with kNN files) is reused by step 4.
4. ``train_resume``: tools/train.py with configs/cotap_vit-s16_coco.py and ``--amp`` for 100
   iterations, a checkpoint, then ``--resume`` to 200.

Outputs: ``OUT/gpu_check.json`` (the machine, every step's command, status and time, the measured
crossover, each goal of docs/benchmarks.md with its value and verdict), ``OUT/benchmarks.md`` (a
copy of docs/benchmarks.md with the GPU sections written) and ``OUT/gpu_check.patch``
(``git apply`` it: those sections and the measured crossover in the loss module).

``--dry-run`` runs the same steps on the CPU with tiny sizes (the smoke config instead of
ViT-S/16, no AMP), so that the script is tested without a GPU.
"""
import argparse
import difflib
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
from cotap_mm.benchmarking.gpu_goals import crossover, goals  # noqa: E402
from cotap_mm.utils.benchmark_report import machine_info  # noqa: E402
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402

DOCS = osp.join(ROOT, 'docs', 'benchmarks.md')
LOSS_MODULE = osp.join(ROOT, 'cotap_mm', 'models', 'losses', 'continuous_ap_loss.py')
CROSSOVER_LINE = re.compile(r"^(_SORTED_FROM_N = \{'cpu': \d+, 'cuda': )(\d+)(\})$", re.M)
LOSS_SIZES = (1000, 2048, 4200, 8400, 16800, 65536, 262144, 1048576, 4194304)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='report folder (created)')
    p.add_argument('--budget-s', type=float, default=540., help='time for all steps together')
    p.add_argument('--dry-run', action='store_true', help='CPU, tiny sizes: test the script')
    return p.parse_args(argv)


def plan(args, out):
    """The steps: (name, commands, share of the budget)."""
    py, tools = sys.executable, osp.join(ROOT, 'tools')
    data = osp.join(out, 'data')
    dry = args.dry_run
    device = 'cpu' if dry else 'cuda'
    loss_json, train_json = osp.join(out, 'benchmark_loss.json'), osp.join(out, 'train.json')
    tests = [py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-k', 'cuda or amp',
             osp.join(ROOT, 'tests', 'test_continuous_ap_loss.py'),
             osp.join(ROOT, 'tests', 'test_cuda.py')]
    sizes = ['1000', '--impls', 'dense', 'sorted', 'auto'] if dry else map(str, LOSS_SIZES)
    loss = [py, osp.join(tools, 'benchmark_loss.py'), '--device', device, '--sizes', *sizes,
            '--repeats', '1' if dry else '5', '--output', osp.join(out, 'benchmarks.md'),
            '--json', loss_json]
    train_bench = [py, osp.join(tools, 'benchmark_train.py'), '--device', device,
                   '--data-root', data, '--generate-data', '--out', train_json,
                   '--update-docs', '--docs', osp.join(out, 'benchmarks.md')]
    train_bench += (['--arch', 'tiny', '--iters', '1', '--warmup', '0', '--breakdown-iters', '0',
                     '--num-workers', '0', '--loader-batches', '1', '--image-size', '64']
                    if dry else ['--arch', 'small', '--batch-size', '28', '--amp',
                                 '--num-workers', '8', '--loader-batches', '20',
                                 '--image-size', '320'])
    config = osp.join(ROOT, 'configs', 'smoke/cotap_tiny_synthetic.py' if dry else
                      'cotap_vit-s16_coco.py')
    data_options = [
        'model.backbone.init_cfg=None',
        f'train_dataloader.dataset.coco.dataset.data_root={data}/coco',
        f'train_dataloader.dataset.coco.nns_file={data}/nns/nns_coco.npz',
        f'train_dataloader.dataset.imagenet.dataset.data_root={data}/imagenet',
        f'train_dataloader.dataset.imagenet.nns_file={data}/nns/nns_imagenet.npz',
        'train_dataloader.dataset.coco.num_neighbors=3',
        'train_dataloader.dataset.imagenet.num_neighbors=3',
    ]
    half, total = (1, 2) if dry else (100, 200)
    work = osp.join(out, 'train')
    common = [py, osp.join(tools, 'train.py'), config, '--work-dir', work] + \
        ([] if dry else ['--amp'])
    ckpt_options = [f'default_hooks.checkpoint.interval={half}', 'default_hooks.logger.interval=10']
    train = [common + ['--cfg-options', f'train_cfg.max_iters={half}', *ckpt_options,
                       *data_options],
             common + ['--resume', osp.join(work, f'iter_{half}.pth'), '--cfg-options',
                       f'train_cfg.max_iters={total}', *ckpt_options, *data_options]]
    return [('cuda_tests', [tests], 0.12), ('benchmark_loss', [loss], 0.3),
            ('benchmark_train', [train_bench], 0.28), ('train_resume', train, 0.3)]


def run_step(name, commands, budget_s, logs):
    """Run the commands of one step in order; stop at the first failure or the budget."""
    log_path = osp.join(logs, f'{name}.log')
    start, status = time.perf_counter(), 'passed'
    with open(log_path, 'w') as log:
        for cmd in commands:
            log.write(f'$ {" ".join(cmd)}\n')
            log.flush()
            left = budget_s - (time.perf_counter() - start)
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                    timeout=max(left, 1)).returncode
            except subprocess.TimeoutExpired:
                status = f'timed out after {budget_s:.0f} s'
                break
            if rc != 0:
                # pytest exit code 5: nothing collected; on a CPU every CUDA test is skipped
                status = f'failed (exit code {rc})'
                break
    return dict(status=status, seconds=round(time.perf_counter() - start, 1), log=log_path,
                commands=[' '.join(c) for c in commands])


def write_patch(out, new_crossover, device):
    """``OUT/gpu_check.patch``: the docs sections and (on CUDA) the measured crossover."""
    changed = []
    docs_new = osp.join(out, 'benchmarks.md')
    if osp.isfile(docs_new):
        changed.append(('docs/benchmarks.md', DOCS, open(docs_new).read()))
    if new_crossover and device == 'cuda':
        src = open(LOSS_MODULE).read()
        changed.append(('cotap_mm/models/losses/continuous_ap_loss.py', LOSS_MODULE,
                        CROSSOVER_LINE.sub(rf'\g<1>{new_crossover}\g<3>', src)))
    diff = []
    for rel, path, new in changed:
        diff += difflib.unified_diff(open(path).read().splitlines(True), new.splitlines(True),
                                     f'a/{rel}', f'b/{rel}')
    atomic_write_text(osp.join(out, 'gpu_check.patch'), ''.join(diff))


def main(argv=None):
    args = parse_args(argv)
    out = osp.abspath(args.out)
    logs = osp.join(out, 'logs')
    os.makedirs(logs, exist_ok=True)
    device = 'cpu' if args.dry_run else 'cuda'
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit('gpu_check: torch sees no CUDA device here; use --dry-run on a CPU')
    shutil.copyfile(DOCS, osp.join(out, 'benchmarks.md'))  # the tools write their sections here
    report = dict(machine=machine_info(device), dry_run=args.dry_run,
                  date=time.strftime('%Y-%m-%d %H:%M'), budget_s=args.budget_s, steps={})
    if not args.dry_run:
        report['machine']['gpus'] = torch.cuda.device_count()
    start = time.perf_counter()
    for name, commands, share in plan(args, out):
        left = args.budget_s - (time.perf_counter() - start)
        if left < 0.5 * share * args.budget_s:
            report['steps'][name] = dict(status=f'skipped: {left:.0f} s of the budget left')
            continue
        print(f'[gpu_check] {name} ...', flush=True)
        report['steps'][name] = run_step(name, commands, min(left, 1.5 * share * args.budget_s),
                                         logs)
        print(f'[gpu_check] {name}: {report["steps"][name]["status"]} '
              f'({report["steps"][name]["seconds"]} s)', flush=True)
    gpus = report['machine'].get('gpus', 0)
    report['steps']['list_scope_global_cuda'] = dict(
        status='not run: needs 2 GPUs' if gpus < 2 else
        'not run: run tools/dist_train.sh with list_scope=global on 2 GPUs by hand')
    loss_rows, train_report = [], None
    if osp.isfile(osp.join(out, 'benchmark_loss.json')):
        loss_rows = json.load(open(osp.join(out, 'benchmark_loss.json')))['rows']
    if osp.isfile(osp.join(out, 'train.json')):
        train_report = json.load(open(osp.join(out, 'train.json')))
    report['sorted_from_n'] = crossover(loss_rows)
    report['goals'] = goals(loss_rows, train_report)
    write_patch(out, report['sorted_from_n'], device)
    atomic_write_text(osp.join(out, 'gpu_check.json'), json.dumps(report, indent=1))
    failed = [n for n, s in report['steps'].items() if s['status'].startswith(('failed', 'timed'))]
    print(f'[gpu_check] report: {osp.join(out, "gpu_check.json")}; failed steps: '
          f'{", ".join(failed) or "none"}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
