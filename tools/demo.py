"""The embedded demo: synthetic scenes -> init -> kNN -> CoTAP -> mmseg linear probe -> mIoU.

    python tools/demo.py [--work-dir work_dirs/demo] [--seed 0] [--preset default|mini]

Runs the whole chain with the real tools, each stage a subprocess whose full output goes to
``WORK_DIR/logs/<stage>.log``:

1. ``data``      tools/make_synthetic_scenes.py: COCO-style, ImageNet-style and mmseg folders;
2. ``knn-boot``  tools/precompute_knn.py with random weights: the pairs of the init stage, whose
                 pair-dependent loss is switched off, so they only satisfy the data pipeline;
3. ``init``      tools/train.py configs/demo/init_vit-tiny_synthetic.py: an image-level
                 self-distillation of the demo ViT from random weights (the stand-in for DINO),
                 then extract_backbone.py -> ``init_backbone.pth``;
4. ``knn``       tools/precompute_knn.py with the init backbone (as the released kNN files come
                 from a DINO model);
5. ``cotap``     tools/train.py configs/demo/cotap_vit-tiny_synthetic.py from the init, then
                 extract_backbone.py (student, as the released evaluation) -> ``cotap_backbone.pth``;
6. ``probe-init``/``probe-cotap``  ``mim train mmseg configs/demo/linear-probe_synthetic.py``
                 with each backbone (same probe config, same seed), then ``mim test mmseg`` ->
                 mIoU;
7. ``pictures``  tools/visualize.py: PCA / prototype / foreground pictures of both backbones.

Prints a table (init mIoU, CoTAP mIoU, seconds per stage) and writes ``WORK_DIR/results.json``
with ``init_miou``, ``cotap_miou``, ``stage_seconds`` and ``mim_test_command`` (the exact command
that re-evaluates the CoTAP probe from the repository root inside .venv).
"""
import argparse
import contextlib
import importlib.util
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = dict(
    init='configs/demo/init_vit-tiny_synthetic.py',
    cotap='configs/demo/cotap_vit-tiny_synthetic.py',
    probe='configs/demo/linear-probe_synthetic.py')

# dataset sizes and schedule lengths; 'mini' is the test-suite miniature of the same chain
PRESETS = dict(
    default=dict(size=96, num_coco=1000, num_imagenet=1000, num_seg_train=300, num_seg_val=100,
                 init_iters=300, cotap_iters=300, probe_iters=300, batch_size=16, knn_k=8,
                 num_pictures=4),
    mini=dict(size=64, num_coco=24, num_imagenet=24, num_seg_train=12, num_seg_val=6,
              init_iters=3, cotap_iters=3, probe_iters=4, batch_size=4, knn_k=8,
              num_pictures=2),
)
DEMO_HEADS = 3  # configs/demo: a 96-d ViT with 3 heads (not inferable from tensor shapes)
_ITER = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')
_MIOU = re.compile(r'mIoU:\s*([0-9.]+)')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='CoTAP demo on synthetic scenes (CPU, minutes)')
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--seed', type=int, default=0, help='seed of data, training and probes')
    p.add_argument('--preset', choices=sorted(PRESETS), default='default')
    p.add_argument('--init', choices=['random', 'selfdistill'], default='random',
                   help='init backbone: seeded random weights (default), or a short image-level '
                        'self-distillation made by the demo (configs/demo/init_*.py); see '
                        'docs/demo.md for why random is the default')
    p.add_argument('--cotap-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='extra --cfg-options of the CoTAP stage (ablations), e.g. '
                        'model.loss_weights.cotap=0.')
    p.add_argument('--skip-pictures', action='store_true')
    return p.parse_args(argv)


_MARKER = '.cotap_demo'  # marks a work dir this tool created, so that a rerun may replace it


def prepare_work_dir(work_dir):
    """Start afresh: replace an earlier demo's work dir, refuse any other non-empty folder."""
    if osp.isdir(work_dir) and os.listdir(work_dir):
        if not osp.isfile(osp.join(work_dir, _MARKER)):
            raise SystemExit(f'demo: --work-dir {work_dir} is not empty and was not written by '
                             'tools/demo.py; choose another folder or empty it')
        import shutil
        shutil.rmtree(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    open(osp.join(work_dir, _MARKER), 'w').close()


def _load_tool(script):
    """The module of ``tools/<script>`` (tools/ is not a package)."""
    path = osp.join(ROOT, 'tools', script)
    name = 'cotap_demo_' + osp.splitext(script)[0].replace('/', '_')
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class Demo:
    """Runs the stages; ``self.seconds`` holds the wall time of each."""

    def __init__(self, work_dir, seed, preset, init='random', console=None, cotap_options=()):
        self.wd = osp.abspath(work_dir)
        self.init = init
        self.cotap_options = list(cotap_options)
        self.seed, self.p = seed, PRESETS[preset]
        self.console = console or Console()
        self.seconds = {}
        self.python = sys.executable
        # unbuffered: the training logs drive the progress bars as they happen
        self.env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHONHASHSEED='0',
                        PYTHONUNBUFFERED='1')
        self.env['PYTHONPATH'] = ROOT + os.pathsep + self.env.get('PYTHONPATH', '')
        # mim must be the one of this interpreter's environment
        self.mim = osp.join(osp.dirname(self.python), 'mim')
        os.makedirs(osp.join(self.wd, 'logs'), exist_ok=True)
        self._inproc_log = None

    def path(self, *parts):
        return osp.join(self.wd, *parts)

    # -- running ---------------------------------------------------------------------------

    def run(self, stage, cmd, progress=None, task=None):
        """Run ``cmd`` from the repository root, logging to logs/<stage>.log; raise on failure.

        Training logs (``Iter(train) [ i/n]``) advance ``task`` of ``progress``.
        """
        log_path = self.path('logs', f'{stage}.log')
        out = []
        with open(log_path, 'a') as log:
            log.write('$ ' + shlex.join(cmd) + '\n')
            log.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            for line in proc.stdout:
                log.write(line)
                out.append(line)
                m = _ITER.search(line)
                if m and progress is not None:
                    progress.update(task, completed=int(m.group(1)), total=int(m.group(2)))
            rc = proc.wait()
        if rc != 0:
            tail = ''.join(out[-25:])
            raise RuntimeError(f'demo stage `{stage}` failed (exit {rc}); full log: {log_path}\n'
                               f'--- last lines ---\n{tail}')
        return ''.join(out)

    def call(self, stage, script, *args):
        """Run ``main(argv)`` of ``tools/<script>`` in this process (no interpreter start-up and
        OpenMMLab imports per call: the light stages take seconds), its console output going to
        ``logs/in-process.log`` (one file kept open: MMLogger binds its stream once)."""
        if self._inproc_log is None:
            self._inproc_log = open(self.path('logs', 'in-process.log'), 'a')
        log = self._inproc_log
        argv = [str(a) for a in args]
        log.write(f'\n[{stage}] $ tools/{script} {shlex.join(argv)}\n')
        log.flush()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                rc = _load_tool(script).main(argv)
        except Exception as e:
            raise RuntimeError(f'demo stage `{stage}`: tools/{script} failed: {e}; log: '
                               f'{log.name}') from e
        if isinstance(rc, int) and rc != 0:
            raise RuntimeError(f'demo stage `{stage}`: tools/{script} exited with {rc}; log: '
                               f'{log.name}')

    def stage(self, name, fn, total=None):
        """Run one stage with a progress line; record its seconds."""
        start = time.perf_counter()
        with Progress(TextColumn(f'[bold]{name:<12}'), BarColumn(), TextColumn('{task.completed}/'
                      '{task.total}' if total else ''), TimeElapsedColumn(),
                      console=self.console, transient=False) as progress:
            task = progress.add_task(name, total=total or 1)
            result = fn(progress, task)
            progress.update(task, completed=total or 1)
        self.seconds[name] = round(time.perf_counter() - start, 1)
        return result

    def tool(self, script, *args):
        return [self.python, osp.join(ROOT, 'tools', script), *map(str, args)]

    # -- stages ----------------------------------------------------------------------------

    def data(self, progress, task):
        p = self.p
        self.call('data', 'make_synthetic_scenes.py', self.path('data'), '--seed', self.seed, '--size',
            p['size'], '--num-coco', p['num_coco'], '--num-imagenet', p['num_imagenet'],
            '--num-seg-train', p['num_seg_train'], '--num-seg-val', p['num_seg_val'], '--force')

    def knn(self, stage, checkpoint=None):
        def fn(progress, task):
            # arch and patch size come from the checkpoint's meta; the bootstrap pairs (random
            # weights) are only there to satisfy the data pipeline of the init stage
            extra = (['--checkpoint', checkpoint] if checkpoint else
                     ['--arch', 'tiny', '--patch-size', 8])
            for subset, folder in (('coco', 'coco/train2017'), ('imagenet', 'imagenet/train')):
                self.call(stage, 'precompute_knn.py', self.path('data', folder),
                          self.path('data', 'nns', f'nns_{subset}.npz'), '--k', self.p['knn_k'],
                          '--image-size', 64, '--num-workers', 0, *extra)
        return fn

    def _train_options(self, iters):
        return [
            f'train_cfg.max_iters={iters}',
            f'randomness.seed={self.seed}', f'train_dataloader.batch_size={self.p["batch_size"]}',
            f'default_hooks.checkpoint.interval={iters}',
            f'train_dataloader.dataset.coco.dataset.data_root={self.path("data", "coco")}',
            f'train_dataloader.dataset.coco.nns_file={self.path("data", "nns", "nns_coco.npz")}',
            f'train_dataloader.dataset.imagenet.dataset.data_root={self.path("data", "imagenet")}',
            'train_dataloader.dataset.imagenet.nns_file='
            f'{self.path("data", "nns", "nns_imagenet.npz")}',
        ]

    def pretrain(self, name, iters, extra_options=()):
        def fn(progress, task):
            work = self.path(name)
            self.run(name, self.tool('train.py', CONFIGS[name], '--work-dir', work,
                                     '--cfg-options', *self._train_options(iters),
                                     *extra_options), progress, task)
            # the init's final LayerNorm is dropped, as CoTAP drops DINO's (spec §2.1)
            extra = ['--drop-final-norm'] if name == 'init' else []
            self.call(name, 'model_converters/extract_backbone.py',
                      osp.join(work, f'iter_{iters}.pth'), self.path(f'{name}_backbone.pth'),
                      '--which', 'student', '--num-heads', DEMO_HEADS, *extra)
        return fn

    def probe_options(self, name):
        return [
            f'model.backbone.init_cfg.checkpoint={self.path(f"{name}_backbone.pth")}',
            *[f'{split}_dataloader.dataset.data_root={self.path("data", "seg")}'
              for split in ('train', 'val', 'test')],
            f'randomness.seed={self.seed}',
        ]

    def mim_test_command(self, name):
        iters = self.p['probe_iters']
        return [self.mim, 'test', 'mmseg', CONFIGS['probe'], '--checkpoint',
                self.path(f'probe_{name}', f'iter_{iters}.pth'), '--work-dir',
                self.path(f'probe_{name}', 'test'), '--cfg-options', *self.probe_options(name)]

    def probe(self, name):
        def fn(progress, task):
            iters = self.p['probe_iters']
            opts = self.probe_options(name) + [
                f'train_cfg.max_iters={iters}', f'default_hooks.checkpoint.interval={iters}',
                f'train_cfg.val_interval={iters}']
            self.run(f'probe-{name}', [self.mim, 'train', 'mmseg', CONFIGS['probe'],
                                       '--work-dir', self.path(f'probe_{name}'),
                                       '--cfg-options', *opts], progress, task)
            out = self.run(f'probe-{name}', self.mim_test_command(name))
            found = _MIOU.findall(out)
            if not found:
                raise RuntimeError(f'demo: no mIoU in the output of mim test; see '
                                   f'{self.path("logs", f"probe-{name}.log")}')
            return float(found[-1])
        return fn

    def pictures(self, progress, task):
        seg_val = self.path('data', 'seg', 'img_dir', 'val')
        images = sorted(os.listdir(seg_val))[:self.p['num_pictures']]
        # the self-distilled init has no object-aware filter, hence no prototype pictures
        for name in ('init', 'cotap') if self.init == 'random' else ('cotap', ):
            self.call('pictures', 'visualize.py', CONFIGS['probe'],
                      self.path(f'{name}_backbone.pth'), *[osp.join(seg_val, f) for f in images],
                      '--out-dir', self.path('pictures', name), '--size', 192)

    # -- the chain -------------------------------------------------------------------------

    def random_init(self, progress, task):
        """The init backbone: the demo ViT with seeded random weights, saved like a converted
        checkpoint, so that CoTAP starts from exactly the weights the init probe measures."""
        import torch
        from mmengine.config import Config

        import cotap_mm  # noqa: F401  (registers the backbone)
        from cotap_mm.registry import MODELS
        from cotap_mm.utils.fileio import atomic_save
        cfg = Config.fromfile(osp.join(ROOT, CONFIGS['cotap']))
        backbone_cfg = dict(cfg.model.backbone, init_cfg=None, out_type='featmap')
        torch.manual_seed(self.seed)
        backbone = MODELS.build(backbone_cfg)
        backbone.init_weights()
        state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
        meta = dict(converter='tools/demo.py (random init)', seed=self.seed,
                    arch=dict(cfg.demo_arch), patch_size=backbone_cfg['patch_size'])
        atomic_save(dict(meta=meta, state_dict=state), self.path('init_backbone.pth'))

    def __call__(self, skip_pictures=False):
        p = self.p
        self.stage('data', self.data)
        if self.init == 'random':
            self.stage('init', self.random_init)
            self.stage('knn', self.knn('knn'))
        else:
            self.stage('knn-boot', self.knn('knn-boot'))
            self.stage('init', self.pretrain('init', p['init_iters']), total=p['init_iters'])
            self.stage('knn', self.knn('knn', self.path('init_backbone.pth')))
        self.stage('cotap', self.pretrain('cotap', p['cotap_iters'], [
            f'model.backbone.init_cfg.checkpoint={self.path("init_backbone.pth")}',
            *self.cotap_options]),
            total=p['cotap_iters'])
        init_miou = self.stage('probe-init', self.probe('init'), total=p['probe_iters'])
        cotap_miou = self.stage('probe-cotap', self.probe('cotap'), total=p['probe_iters'])
        if not skip_pictures:
            self.stage('pictures', self.pictures)
        cmd = self.mim_test_command('cotap')
        cmd[0] = 'mim'  # as typed inside the activated .venv, from the repository root
        results = dict(
            init_miou=init_miou, cotap_miou=cotap_miou,
            gain=round(cotap_miou - init_miou, 2), seed=self.seed,
            stage_seconds=self.seconds, total_seconds=round(sum(self.seconds.values()), 1),
            mim_test_command=shlex.join(cmd), preset=p, init=self.init,
            cotap_options=self.cotap_options)
        from cotap_mm.utils.fileio import atomic_write_text
        atomic_write_text(self.path('results.json'), json.dumps(results, indent=2))
        return results


def print_table(results, console):
    table = Table(title='CoTAP demo: linear-probe mIoU (%) on the synthetic scenes (val)')
    table.add_column('weights')
    table.add_column('mIoU', justify='right')
    init_name = dict(random='seeded random weights', selfdistill='image-level self-distillation')
    table.add_row(f"init ({init_name[results['init']]})", f"{results['init_miou']:.2f}")
    table.add_row('CoTAP (from the init)', f"{results['cotap_miou']:.2f}")
    table.add_row('gain', f"{results['gain']:+.2f}")
    console.print(table)
    times = Table(title='seconds per stage')
    for name in results['stage_seconds']:
        times.add_column(name, justify='right')
    times.add_column('total', justify='right')
    times.add_row(*[f'{s:.0f}' for s in results['stage_seconds'].values()],
                  f"{results['total_seconds']:.0f}")
    console.print(times)


def main(argv=None):
    args = parse_args(argv)
    console = Console()
    prepare_work_dir(args.work_dir)
    results = Demo(args.work_dir, args.seed, args.preset, args.init, console,
                   args.cotap_options)(args.skip_pictures)
    print_table(results, console)
    console.print(f"results: {osp.join(args.work_dir, 'results.json')}")
    console.print(f"re-evaluate the CoTAP probe: {results['mim_test_command']}")
    return results


if __name__ == '__main__':
    main()
