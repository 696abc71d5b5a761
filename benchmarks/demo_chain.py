"""The embedded demo as a chain of stages: synthetic scenes -> image-level init -> kNN ->
CoTAP -> dense probes, each stage a command line of the checkout (docs/demo.md).

1. ``data``      tools/make_synthetic_scenes.py: COCO-style, ImageNet-style and mmseg folders, a
                 random colour per instance, so that class is carried by shape, texture and
                 context (docs/synthetic.md);
2. ``init``      the image-level init, the stand-in for DINO: by default an 8-way image
                 classifier trained on the ImageNet-style folder
                 (configs/demo/init-supervised_vit-tiny_synthetic.py), cached in ``cache_dir``
                 under a key of its config, seed and data, so a rerun reuses it;
3. ``knn``       tools/precompute_knn.py with the init backbone (as the released kNN files come
                 from a DINO model);
4. ``control_cls`` the data-matched control of docs/protocol.md: the CoTAP configuration with
                 its dense terms off (only the CLS code losses), the same steps;
5. ``cotap``     tools/train.py configs/demo/cotap_vit-tiny_synthetic.py from the init, then
                 extract_backbone.py (student, as the released evaluation) -> ``cotap_backbone.pth``;
6. ``probe-*``   ``mim train mmseg`` + ``mim test mmseg`` of the same linear probe on raw 8x8
                 pixel patches (the floor), the init and CoTAP; the chance level of the labels;
7. ``analysis``  semantic concentration, k-means cluster probe and converged linear probe of
                 the init and CoTAP features on the labelled validation scenes;
8. ``primary``   the protocol's primary probe of the init, the control and CoTAP: the converged
                 linear probe of their D-wide ViT tokens, scored on val and on the held-out test
                 scenes;
9. ``pictures``  PCA of init vs CoTAP features, and the CoTAP backbone's PCA / prototype /
                 foreground pictures.

:meth:`DemoChain.results` writes ``WORK_DIR/results.json`` with ``init_miou``, ``cotap_miou``,
``gain``, ``pixels_miou``, ``chance_miou``, ``primary``, every row's scores, ``stage_seconds`` and
``mim_test_command`` (the exact command that re-evaluates the CoTAP probe from the repository
root inside .venv).
"""
import hashlib
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

from .demo_presets import (CONFIGS, DEMO_ARCH, DENSE_OFF, INIT_PRESET_KEYS, PRESETS,
                           config_text)
from .demo_probes import DemoProbes

__all__ = ['DemoChain']

_ITER = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the checkout whose tools/ it runs
# the rows the demo scores with the fair comparison's primary probe (docs/protocol.md)
PRIMARY_ROWS = ('init', 'control_cls', 'cotap')


class DemoChain(DemoProbes):
    """Runs the demo's stages, each a command line of the checkout ``ROOT`` in its own process;
    ``self.seconds`` holds the wall time of each.

    A *row* is one backbone that is probed: ``'pixels'`` (raw pixel patches), ``'init'`` and
    ``'cotap'``; tools/benchmark_demo.py adds the controls with :meth:`image_level_control` and
    the ablations with :meth:`cotap`.
    """

    def __init__(self, work_dir, seed, preset, init='supervised', console=None, cotap_options=(),
                 cache_dir='work_dirs/demo_cache', cotap_iters=None):
        self.root = ROOT
        self.wd = osp.abspath(work_dir)
        self.init = init
        self.cotap_options = list(cotap_options)
        self.seed = seed
        self.p = dict(DEMO_ARCH, device='cpu', knn_image_size=64)
        self.p.update(PRESETS[preset])
        preset_configs = self.p.pop('configs', None)  # a preset's own configs replace all
        if preset_configs and init != 'random' and init not in preset_configs:
            raise ValueError(f'demo: --preset {preset} has no {init} init; use --init supervised')
        self.configs = dict(CONFIGS, **(preset_configs or {}))
        if self.p['device'] == 'cuda':
            import torch
            if not torch.cuda.is_available():
                raise ValueError(f'demo: --preset {preset} needs a CUDA GPU and torch sees none')
        self.cotap_iters = int(cotap_iters or self.p['cotap_iters'])
        self.cache_dir = osp.abspath(cache_dir)
        self.console = console or Console()
        self.seconds = {}
        self.rows = {}
        self.init_cached = None  # the cache folder the trained init came from, if it did
        self.knn_agreement = {}  # per kNN file: classes shared with the neighbours
        self.python = sys.executable
        # unbuffered: the training logs drive the progress bars as they happen
        self.env = dict(os.environ, PYTHONHASHSEED='0', PYTHONUNBUFFERED='1')
        if self.p['device'] == 'cpu':  # also on a machine with a GPU
            self.env['CUDA_VISIBLE_DEVICES'] = ''
        self.env['PYTHONPATH'] = self.root + os.pathsep + self.env.get('PYTHONPATH', '')
        # mim must be the one of this interpreter's environment
        self.mim = osp.join(osp.dirname(self.python), 'mim')
        os.makedirs(osp.join(self.wd, 'logs'), exist_ok=True)

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
            proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            for line in proc.stdout:
                log.write(line)
                log.flush()  # the log follows the stage as it runs
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

    def stage(self, name, fn, total=None):
        """Run one stage with a progress line; record its seconds."""
        start = time.perf_counter()
        with Progress(TextColumn(f'[bold]{name:<14}'), BarColumn(), TextColumn('{task.completed}/'
                      '{task.total}' if total else ''), TimeElapsedColumn(),
                      console=self.console, transient=False) as progress:
            task = progress.add_task(name, total=total or 1)
            result = fn(progress, task)
            progress.update(task, completed=total or 1)
        self.seconds[name] = round(time.perf_counter() - start, 1)
        return result

    def tool(self, script, *args):
        return [self.python, osp.join(self.root, 'tools', script), *map(str, args)]

    def tool_json(self, stage, script, *args, out):
        """Run ``tools/<script>`` with ``--out out``; the results it wrote there."""
        self.run(stage, self.tool(script, *args, '--out', out))
        with open(out) as f:
            return json.load(f)

    # -- data and kNN ----------------------------------------------------------------------

    def data(self, progress, task):
        p = self.p
        self.run('data', self.tool(
            'make_synthetic_scenes.py', self.path('data'), '--seed', self.seed, '--size',
            p['size'], '--num-coco', p['num_coco'], '--num-imagenet', p['num_imagenet'],
            '--num-seg-train', p['num_seg_train'], '--num-seg-val', p['num_seg_val'],
            '--num-seg-test', p['num_seg_test'], '--force'))

    def knn(self, stage, checkpoint=None):
        def fn(progress, task):
            # arch and patch size come from the checkpoint's meta; the bootstrap pairs (random
            # weights) are only there to satisfy the data pipeline of the self-distilled init
            extra = (['--checkpoint', checkpoint] if checkpoint else
                     ['--arch', 'tiny', '--patch-size', 8])
            for subset, folder in (('coco', 'coco/train2017'), ('imagenet', 'imagenet/train')):
                self.run(stage, self.tool(
                    'precompute_knn.py', self.path('data', folder),
                    self.path('data', 'nns', f'nns_{subset}.npz'), '--k', self.p['knn_k'],
                    '--image-size', self.p['knn_image_size'], '--num-workers', 0, '--device',
                    self.p['device'], *extra))
                if checkpoint:  # the classes the init's pairs share
                    from cotap_mm.evaluation.knn_agreement import synthetic_knn_agreement
                    self.knn_agreement[subset] = synthetic_knn_agreement(
                        self.path('data'), subset, self.path('data', 'nns', f'nns_{subset}.npz'),
                        self.seed)
        return fn

    # -- training --------------------------------------------------------------------------

    def _data_options(self):
        return [
            f'train_dataloader.dataset.coco.dataset.data_root={self.path("data", "coco")}',
            f'train_dataloader.dataset.coco.nns_file={self.path("data", "nns", "nns_coco.npz")}',
            f'train_dataloader.dataset.imagenet.dataset.data_root={self.path("data", "imagenet")}',
            'train_dataloader.dataset.imagenet.nns_file='
            f'{self.path("data", "nns", "nns_imagenet.npz")}',
        ]

    def _run_options(self, iters, batch_size):
        return [f'train_cfg.max_iters={iters}', f'randomness.seed={self.seed}',
                f'train_dataloader.batch_size={batch_size}',
                f'default_hooks.checkpoint.interval={iters}']

    @staticmethod
    def _cosine_options(iters):
        """The CoTAP configs' LR and weight-decay cosines stretched to ``iters`` (the EMA
        momentum follows ``max_iters`` by itself)."""
        return [f'param_scheduler.{i}.{k}={v}' for i in (0, 1)
                for k, v in (('T_max', iters + 5), ('end', iters))]

    @staticmethod
    def _supervised_schedule(iters, warmup=None, lr=None, eta_min=None):
        """The supervised config's warm-up + cosine fitted to ``iters``."""
        warmup = max(1, min(100, iters // 10)) if warmup is None else warmup
        opts = [f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
                f'param_scheduler.1.T_max={max(1, iters - warmup)}', f'param_scheduler.1.end={iters}']
        if lr is not None:
            opts += [f'optim_wrapper.optimizer.lr={lr}', 'param_scheduler.0.start_factor=1.0',
                     f'param_scheduler.1.eta_min={eta_min}']
        return opts

    def train(self, name, config, options, iters, progress=None, task=None):
        """tools/train.py ``config`` in WORK_DIR/<name>; returns its last checkpoint."""
        work = self.path(name)
        self.run(name, self.tool('train.py', config, '--work-dir', work, '--cfg-options',
                                 *options), progress, task)
        return osp.join(work, f'iter_{iters}.pth')

    def extract(self, stage, checkpoint, dst, drop_final_norm=False):
        extra = ['--drop-final-norm'] if drop_final_norm else []
        self.run(stage, self.tool('model_converters/extract_backbone.py', checkpoint, dst,
                                  '--which', 'student', '--num-heads', self.p['num_heads'],
                                  *extra))

    def init_key(self):
        """Cache key of the trained init: its config, the preset entries it depends on (its
        data and schedule), the seed and the scene generator's version."""
        from cotap_mm.datasets.synthetic import GENERATOR_VERSION
        text = config_text(osp.join(self.root, self.configs[self.init]))
        used = INIT_PRESET_KEYS[self.init]
        blob = json.dumps(dict(config=text, preset={k: self.p[k] for k in used}, seed=self.seed,
                               init=self.init, generator=GENERATOR_VERSION), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def trained_init(self, progress, task):
        """The supervised or self-distilled init: from the cache, else trained and cached.

        Leaves ``init_backbone.pth`` (final norm dropped, as CoTAP drops DINO's) and
        ``init_full.pth`` (the training checkpoint: the image-level control continues it)."""
        from cotap_mm.utils.fileio import atomic_copy
        cache = osp.join(self.cache_dir, f'{self.init}-seed{self.seed}-{self.init_key()}')
        files = ('init_backbone.pth', 'init_full.pth')
        if all(osp.isfile(osp.join(cache, f)) for f in files):
            for f in files:
                atomic_copy(osp.join(cache, f), self.path(f))
            self.init_cached = cache
            return
        if self.init == 'supervised':
            iters = self.p['init_iters']
            options = self._run_options(iters, self.p['init_batch_size']) + [
                f'train_dataloader.dataset.data_root={self.path("data", "imagenet")}',
                *self._supervised_schedule(iters)]
        else:
            iters = self.p['selfdistill_iters']
            self.stage('knn-boot', self.knn('knn-boot'))
            options = (self._run_options(iters, self.p['batch_size']) + self._data_options()
                       + self._cosine_options(iters))
        ckpt = self.train('init', self.configs[self.init], options, iters, progress, task)
        self.extract('init', ckpt, self.path('init_backbone.pth'), drop_final_norm=True)
        atomic_copy(ckpt, self.path('init_full.pth'))
        os.makedirs(cache, exist_ok=True)
        for f in files:
            atomic_copy(self.path(f), osp.join(cache, f))

    def random_init(self, progress, task):
        """The init backbone: the demo ViT with seeded random weights, saved like a converted
        checkpoint, so that CoTAP starts from exactly the weights the init probe measures."""
        import torch
        from mmengine.config import Config

        import cotap_mm.models.backbones  # noqa: F401  (registers the backbone)
        from cotap_mm.registry import MODELS
        from cotap_mm.utils.fileio import atomic_save
        cfg = Config.fromfile(osp.join(self.root, self.configs['cotap']))
        backbone_cfg = dict(cfg.model.backbone, init_cfg=None, out_type='featmap')
        torch.manual_seed(self.seed)
        backbone = MODELS.build(backbone_cfg)
        backbone.init_weights()
        state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
        meta = dict(converter='tools/demo.py (random init)', seed=self.seed,
                    arch=dict(cfg.demo_arch), patch_size=backbone_cfg['patch_size'])
        atomic_save(dict(meta=meta, state_dict=state), self.path('init_backbone.pth'))

    def cotap(self, name='cotap', options=(), with_oaf=True):
        """CoTAP from the init for ``self.cotap_iters`` steps -> ``<name>_backbone.pth``."""
        def fn(progress, task):
            iters = self.cotap_iters
            opts = (self._run_options(iters, self.p['batch_size']) + self._data_options()
                    + self._cosine_options(iters)
                    + [f'model.backbone.init_cfg.checkpoint={self.path("init_backbone.pth")}',
                       *self.cotap_options, *options])
            ckpt = self.train(name, self.configs['cotap'], opts, iters, progress, task)
            self.extract(name, ckpt, self.path(f'{name}_backbone.pth'))
            self.rows[name] = dict(checkpoint=self.path(f'{name}_backbone.pth'),
                                   with_oaf=with_oaf)
        return fn

    def image_level_control(self, name='init_more'):
        """The init trained ``self.cotap_iters`` more steps with its own image-level loss (same
        LR cosine as the CoTAP stage's backbone), so that a gain of CoTAP over the init is its
        dense objective, not more training."""
        if self.init != 'supervised':
            raise ValueError('demo: the image-level control continues the supervised init')

        def fn(progress, task):
            from mmengine.config import Config
            iters = self.cotap_iters
            cotap_cfg = Config.fromfile(osp.join(self.root, self.configs['cotap']))
            lr = cotap_cfg.optim_wrapper.optimizer.lr
            eta_min = cotap_cfg.param_scheduler[0].eta_min
            opts = self._run_options(iters, self.p['init_batch_size']) + [
                f'train_dataloader.dataset.data_root={self.path("data", "imagenet")}',
                *self._supervised_schedule(iters, warmup=1, lr=lr, eta_min=eta_min),
                'model.init_cfg.type=CoTAPPretrained',
                f'model.init_cfg.checkpoint={self.path("init_full.pth")}']
            ckpt = self.train(name, self.configs['supervised'], opts, iters, progress, task)
            self.extract(name, ckpt, self.path(f'{name}_backbone.pth'), drop_final_norm=True)
            self.rows[name] = dict(checkpoint=self.path(f'{name}_backbone.pth'), with_oaf=False)
        return fn

    # -- the chain -------------------------------------------------------------------------

    def prepare(self):
        """Data, init and kNN: everything the CoTAP stage and the controls start from."""
        self.stage('data', self.data)
        if self.init == 'random':
            self.stage('init', self.random_init)
        else:
            total = self.p['init_iters' if self.init == 'supervised' else 'selfdistill_iters']
            self.stage('init', self.trained_init, total=total)
        self.rows['init'] = dict(checkpoint=self.path('init_backbone.pth'),
                                 with_oaf=self.init == 'random')
        self.stage('knn', self.knn('knn', self.path('init_backbone.pth')))

    def __call__(self, skip_pictures=False):
        self.prepare()
        self.stage('control_cls', self.cotap('control_cls', DENSE_OFF), total=self.cotap_iters)
        self.stage('cotap', self.cotap(), total=self.cotap_iters)
        self.evaluate(['pixels', 'init', 'cotap'])
        self.stage('primary', self.primary(PRIMARY_ROWS))
        chance_miou = self.stage('chance', self.chance)
        if not skip_pictures:
            self.stage('pictures', self.pictures)
        return self.results(chance_miou)

    def results(self, chance_miou):
        cmd = self.mim_test_command('cotap')
        cmd[0] = 'mim'  # as typed inside the activated .venv, from the repository root
        init, cotap = self.rows['init'], self.rows['cotap']
        results = dict(
            init_miou=init['linear_miou'], cotap_miou=cotap['linear_miou'],
            gain=round(cotap['linear_miou'] - init['linear_miou'], 2),
            lbfgs_gain=(round(cotap['lbfgs_miou'] - init['lbfgs_miou'], 2)
                        if 'lbfgs_miou' in cotap and 'lbfgs_miou' in init else None),
            primary={name: self.rows[name]['lbfgs_vit'] for name in PRIMARY_ROWS},
            pixels_miou=self.rows['pixels']['linear_miou'], chance_miou=round(chance_miou, 2),
            rows={name: {k: v for k, v in row.items() if k != 'checkpoint'}
                  for name, row in self.rows.items()},
            seed=self.seed, stage_seconds=self.seconds,
            total_seconds=round(sum(self.seconds.values()), 1), init_cached=self.init_cached,
            mim_test_command=shlex.join(cmd), preset=self.p, cotap_iters=self.cotap_iters,
            init=self.init, cotap_options=self.cotap_options, knn_agreement=self.knn_agreement)
        from cotap_mm.utils.fileio import atomic_write_text
        atomic_write_text(self.path('results.json'), json.dumps(results, indent=2))
        return results
