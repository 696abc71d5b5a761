"""The embedded demo: synthetic scenes -> image-level init -> kNN -> CoTAP -> dense probes.

    python tools/demo.py [--work-dir work_dirs/demo] [--seed 0] [--preset default|mini]
        [--init supervised|random|selfdistill] [--cache-dir work_dirs/demo_cache]

Runs the whole chain with the real tools, each stage a subprocess (or an in-process call of a
tool's ``main``) whose output goes to ``WORK_DIR/logs/``:

1. ``data``      tools/make_synthetic_scenes.py: COCO-style, ImageNet-style and mmseg folders, a
                 random colour per instance, so that class is carried by shape, texture and
                 context (docs/synthetic.md);
2. ``init``      the image-level init, the stand-in for DINO: by default an 8-way image
                 classifier trained on the ImageNet-style folder
                 (configs/demo/init-supervised_vit-tiny_synthetic.py), cached in ``--cache-dir``
                 under a key of its config, seed and data, so a rerun reuses it;
3. ``knn``       tools/precompute_knn.py with the init backbone (as the released kNN files come
                 from a DINO model);
4. ``cotap``     tools/train.py configs/demo/cotap_vit-tiny_synthetic.py from the init, then
                 extract_backbone.py (student, as the released evaluation) -> ``cotap_backbone.pth``;
5. ``probe-*``   ``mim train mmseg`` + ``mim test mmseg`` of the same linear probe on raw 8x8
                 pixel patches (the floor), the init and CoTAP; the chance level of the labels;
6. ``analysis``  the semantic concentration (tools/analysis/semantic_concentration.py) of the
                 init and CoTAP features on the labelled validation scenes;
7. ``pictures``  tools/visualize.py: PCA / prototype / foreground pictures of the CoTAP backbone.

Prints a table and writes ``WORK_DIR/results.json`` with ``init_miou``, ``cotap_miou``,
``gain``, ``pixels_miou``, ``chance_miou``, ``concentration``, ``stage_seconds`` and
``mim_test_command`` (the exact command that re-evaluates the CoTAP probe from the repository
root inside .venv). tools/benchmark_demo.py adds the controls and ablations over seeds.
"""
import argparse
import contextlib
import hashlib
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

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = dict(
    supervised='configs/demo/init-supervised_vit-tiny_synthetic.py',
    selfdistill='configs/demo/init_vit-tiny_synthetic.py',
    cotap='configs/demo/cotap_vit-tiny_synthetic.py',
    probe='configs/demo/linear-probe_synthetic.py',
    probe_pixels='configs/demo/linear-probe-pixels_synthetic.py')
INITS = ('supervised', 'random', 'selfdistill')

# the demo ViT of configs/demo: 96-d, 3 heads (not inferable from tensor shapes)
DEMO_ARCH = dict(num_heads=3, embed_dims=96)
# dataset sizes and schedule lengths; 'mini' is the test-suite miniature of the same chain,
# 'gpu' the GPU-scale experiment (configs/demo/gpu/: a 6-layer ViT-S/8 on 160-px scenes).
# init_iters / init_batch_size: the supervised init's steps and images per step;
# selfdistill_iters: the self-distilled init's steps (of batch_size items, as the CoTAP stage).
PRESETS = dict(
    default=dict(size=96, num_coco=1000, num_imagenet=1000, num_seg_train=300, num_seg_val=100,
                 init_iters=4000, init_batch_size=64, selfdistill_iters=300, cotap_iters=300,
                 probe_iters=300, lbfgs_iters=200, batch_size=16, knn_k=8, num_pictures=4),
    mini=dict(size=64, num_coco=24, num_imagenet=24, num_seg_train=12, num_seg_val=6,
              init_iters=3, init_batch_size=8, selfdistill_iters=3, cotap_iters=3,
              probe_iters=4, lbfgs_iters=5, batch_size=4, knn_k=8, num_pictures=2),
    gpu=dict(size=160, num_coco=4000, num_imagenet=4000, num_seg_train=1000, num_seg_val=300,
             init_iters=2000, init_batch_size=256, selfdistill_iters=1000, cotap_iters=1000,
             probe_iters=1000, lbfgs_iters=300, batch_size=32, knn_k=8, num_pictures=4,
             device='cuda', knn_image_size=128, num_heads=6, embed_dims=384,
             configs=dict(supervised='configs/demo/gpu/init-supervised_vit-s8_synthetic.py',
                          cotap='configs/demo/gpu/cotap_vit-s8_synthetic.py',
                          probe='configs/demo/gpu/linear-probe_vit-s8_synthetic.py',
                          probe_pixels='configs/demo/gpu/linear-probe-pixels_synthetic-160.py')),
)
# the preset entries each trained init depends on (the key of its cache)
INIT_PRESET_KEYS = dict(
    supervised=('size', 'num_imagenet', 'init_iters', 'init_batch_size'),
    selfdistill=('size', 'num_coco', 'num_imagenet', 'selfdistill_iters', 'batch_size', 'knn_k'))
NUM_CLASSES = 12  # cotap_mm.datasets.synthetic.CLASSES
_ITER = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')
_MIOU = re.compile(r'mIoU:\s*([0-9.]+)')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='CoTAP demo on synthetic scenes (CPU, minutes)')
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--seed', type=int, default=0, help='seed of data, training and probes')
    p.add_argument('--preset', choices=sorted(PRESETS), default='default')
    p.add_argument('--init', choices=INITS, default='supervised',
                   help='init backbone: an 8-way image classifier trained on the ImageNet-style '
                        'scenes (default, a supervised stand-in for DINO), seeded random '
                        'weights, or a short image-level self-distillation; docs/demo.md')
    p.add_argument('--cache-dir', default='work_dirs/demo_cache',
                   help='where trained inits are kept, keyed by their config, seed and data '
                        '(a rerun with the same key skips the init training)')
    p.add_argument('--cotap-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='extra --cfg-options of the CoTAP stage (ablations), e.g. '
                        'model.loss_weights.cotap=0.')
    p.add_argument('--cotap-iters', type=int, default=None,
                   help="length of the CoTAP stage (default: the preset's); the LR, weight "
                        'decay and EMA schedules follow it')
    p.add_argument('--skip-pictures', action='store_true')
    args = p.parse_args(argv)
    if args.cotap_iters is not None and args.cotap_iters < 1:
        p.error('--cotap-iters must be >= 1')
    return args


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
    """Runs the stages; ``self.seconds`` holds the wall time of each.

    A *row* is one backbone that is probed: ``'pixels'`` (raw pixel patches), ``'init'`` and
    ``'cotap'``; tools/benchmark_demo.py adds the controls with :meth:`control` and
    :meth:`ablation`. ``self.rows[name]`` says how each is probed (checkpoint, object-aware
    filter or not) and collects its scores.
    """

    def __init__(self, work_dir, seed, preset, init='supervised', console=None, cotap_options=(),
                 cache_dir='work_dirs/demo_cache', cotap_iters=None):
        if init not in INITS:
            raise ValueError(f'demo: init={init!r}; choose one of {INITS}')
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

    def call(self, stage, script, *args):
        """Run ``main(argv)`` of ``tools/<script>`` in this process (no interpreter start-up and
        OpenMMLab imports per call: the light stages take seconds), its console output going to
        ``logs/in-process.log`` (one file kept open: MMLogger binds its stream once). Returns
        what ``main`` returns."""
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
        return rc

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
        return [self.python, osp.join(ROOT, 'tools', script), *map(str, args)]

    # -- data and kNN ----------------------------------------------------------------------

    def data(self, progress, task):
        p = self.p
        self.call('data', 'make_synthetic_scenes.py', self.path('data'), '--seed', self.seed,
                  '--size', p['size'], '--num-coco', p['num_coco'], '--num-imagenet',
                  p['num_imagenet'], '--num-seg-train', p['num_seg_train'], '--num-seg-val',
                  p['num_seg_val'], '--force')

    def knn(self, stage, checkpoint=None):
        def fn(progress, task):
            # arch and patch size come from the checkpoint's meta; the bootstrap pairs (random
            # weights) are only there to satisfy the data pipeline of the self-distilled init
            extra = (['--checkpoint', checkpoint] if checkpoint else
                     ['--arch', 'tiny', '--patch-size', 8])
            for subset, folder in (('coco', 'coco/train2017'), ('imagenet', 'imagenet/train')):
                self.call(stage, 'precompute_knn.py', self.path('data', folder),
                          self.path('data', 'nns', f'nns_{subset}.npz'), '--k', self.p['knn_k'],
                          '--image-size', self.p['knn_image_size'], '--num-workers', 0,
                          '--device', self.p['device'], *extra)
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
        self.call(stage, 'model_converters/extract_backbone.py', checkpoint, dst, '--which',
                  'student', '--num-heads', self.p['num_heads'], *extra)

    def init_key(self):
        """Cache key of the trained init: its config, the preset entries it depends on (its
        data and schedule), the seed and the scene generator's version."""
        from cotap_mm.datasets.synthetic import GENERATOR_VERSION
        text = _config_text(osp.join(ROOT, self.configs[self.init]))
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

        import cotap_mm  # noqa: F401  (registers the backbone)
        from cotap_mm.registry import MODELS
        from cotap_mm.utils.fileio import atomic_save
        cfg = Config.fromfile(osp.join(ROOT, self.configs['cotap']))
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
            cotap_cfg = Config.fromfile(osp.join(ROOT, self.configs['cotap']))
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

    def vit_tokens(self, name):
        """Row ``<name>_vit``: row ``name`` without its object-aware filter, i.e. its D-wide ViT
        tokens, probed like a backbone that never had one (the init's width)."""
        from cotap_mm.models.utils.loading import read_checkpoint, select_backbone_state
        from cotap_mm.utils.fileio import atomic_save
        src = self.rows[name]['checkpoint']
        ckpt = read_checkpoint(src)
        state, _ = select_backbone_state(ckpt, src)
        meta = ckpt.get('meta', {})
        state = {f'backbone.{k}': v for k, v in state.items() if not k.startswith('oaf.')}
        dst = self.path(f'{name}_vit_backbone.pth')
        atomic_save(dict(meta=dict(meta, vit_tokens_of=src), state_dict=state), dst)
        self.rows[f'{name}_vit'] = dict(checkpoint=dst, with_oaf=False)
        return f'{name}_vit'

    # -- probes ----------------------------------------------------------------------------

    def probe_config(self, name):
        return self.configs['probe_pixels'] if name == 'pixels' else self.configs['probe']

    def probe_options(self, name):
        opts = [*[f'{split}_dataloader.dataset.data_root={self.path("data", "seg")}'
                  for split in ('train', 'val', 'test')], f'randomness.seed={self.seed}']
        if name == 'pixels':
            return opts
        row = self.rows[name]
        opts.insert(0, f'model.backbone.init_cfg.checkpoint={row["checkpoint"]}')
        if not row['with_oaf']:
            # a backbone without the object-aware filter: its D-wide ViT tokens
            opts += ['model.backbone.with_oaf=False', f'model.decode_head.in_channels={self.p["embed_dims"]}',
                     f'model.decode_head.channels={self.p["embed_dims"]}']
        return opts

    def mim_test_command(self, name):
        iters = self.p['probe_iters']
        return [self.mim, 'test', 'mmseg', self.probe_config(name), '--checkpoint',
                self.path(f'probe_{name}', f'iter_{iters}.pth'), '--work-dir',
                self.path(f'probe_{name}', 'test'), '--cfg-options', *self.probe_options(name)]

    def probe(self, name):
        """Linear probe (mim train + mim test mmseg) of row ``name``; its mIoU."""
        def fn(progress, task):
            iters = self.p['probe_iters']
            opts = self.probe_options(name) + [
                f'train_cfg.max_iters={iters}', f'default_hooks.checkpoint.interval={iters}',
                f'train_cfg.val_interval={iters}']
            self.run(f'probe-{name}', [self.mim, 'train', 'mmseg', self.probe_config(name),
                                       '--work-dir', self.path(f'probe_{name}'),
                                       '--cfg-options', *opts], progress, task)
            out = self.run(f'probe-{name}', self.mim_test_command(name))
            found = _MIOU.findall(out)
            if not found:
                raise RuntimeError(f'demo: no mIoU in the output of mim test; see '
                                   f'{self.path("logs", f"probe-{name}.log")}')
            miou = float(found[-1])
            self.rows.setdefault(name, {})['linear_miou'] = miou
            return miou
        return fn

    def analysis(self, names):
        """Semantic concentration, the k-means cluster probe and the converged (L-BFGS) linear
        probe of each row on the labelled scenes (the probe's resolution), in-process."""
        def fn(progress, task):
            for name in names:
                row = self.rows[name]
                common = [self.configs['probe'], row['checkpoint'], '--data-root',
                          self.path('data', 'seg'), '--num-classes', NUM_CLASSES, '--size',
                          self.p['size'], '--num-workers', 0, '--device', self.p['device'],
                          '--seed', self.seed]
                if not row['with_oaf']:
                    common += ['--cfg-options', 'model.backbone.with_oaf=False']
                conc = self.call('analysis', 'analysis/semantic_concentration.py', *common,
                                 '--out', self.path('analysis', f'{name}_concentration.json'))
                cluster = self.call('analysis', 'analysis/cluster_segmentation.py', *common,
                                    '--out', self.path('analysis', f'{name}_clusters.json'))
                lbfgs = self.call('analysis', 'analysis/linear_segmentation.py', *common,
                                  '--iters', self.p['lbfgs_iters'], '--out',
                                  self.path('analysis', f'{name}_linear_lbfgs.json'))
                row.update(concentration=dict(intra=conc['intra'], inter=conc['inter'],
                                              gap=conc['gap'], ratio=conc['ratio']),
                           cluster_miou=cluster['runs'][0]['mIoU'], lbfgs_miou=lbfgs['mIoU'])
        return fn

    def chance(self, progress, task):
        r = self.call('chance', 'analysis/chance_miou.py', self.path('data', 'seg'),
                      '--num-classes', NUM_CLASSES)
        return r['mIoU']

    def pictures(self, progress, task):
        """PCA of the init's and CoTAP's patch features on the same validation scenes
        (``pictures/pca_init_vs_cotap.png``), and the CoTAP backbone's PCA / prototype /
        foreground pictures."""
        seg_val = self.path('data', 'seg', 'img_dir', 'val')
        images = sorted(os.listdir(seg_val))[:self.p['num_pictures']]
        paths = [osp.join(seg_val, f) for f in images]
        self.call('pictures', 'analysis/compare_pca.py', self.configs['probe'],
                  self.rows['init']['checkpoint'], self.rows['cotap']['checkpoint'], '--images',
                  *paths, '--titles', 'init', 'CoTAP', '--size', 192, '--device', self.p['device'],
                  '--out', self.path('pictures', 'pca_init_vs_cotap.png'))
        # only backbones with an object-aware filter have prototype pictures
        for name in [n for n in ('init', 'cotap') if self.rows[n]['with_oaf']]:
            self.call('pictures', 'visualize.py', self.configs['probe'], self.rows[name]['checkpoint'],
                      *paths, '--out-dir', self.path('pictures', name), '--size', 192)

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

    def evaluate(self, names, analyse=True):
        """Linear probes of the rows ``names``; cluster and concentration probes too unless
        ``analyse`` is False."""
        for name in names:
            self.stage(f'probe-{name}', self.probe(name), total=self.p['probe_iters'])
        if analyse:
            self.stage('analysis', self.analysis([n for n in names if n != 'pixels']))

    def __call__(self, skip_pictures=False):
        self.prepare()
        self.stage('cotap', self.cotap(), total=self.cotap_iters)
        self.evaluate(['pixels', 'init', 'cotap'])
        self.evaluate([self.vit_tokens('cotap')], analyse=False)
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
            cotap_vit_miou=self.rows.get('cotap_vit', {}).get('linear_miou'),
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


def _config_text(path):
    """The text of a config file followed by that of its ``_base_`` files, recursively."""
    from mmengine.config import Config
    with open(path) as f:
        parts = [f.read()]
    for base in Config._get_base_files(path):
        parts.append(_config_text(osp.join(osp.dirname(path), base)))
    return '\n'.join(parts)


def main(argv=None):
    args = parse_args(argv)
    from cotap_mm.benchmarking.demo_report import print_demo_results
    console = Console()
    prepare_work_dir(args.work_dir)
    results = Demo(args.work_dir, args.seed, args.preset, args.init, console,
                   args.cotap_options, args.cache_dir, args.cotap_iters)(args.skip_pictures)
    print_demo_results(results, console)
    console.print(f"results: {osp.join(args.work_dir, 'results.json')}")
    console.print(f"re-evaluate the CoTAP probe: {results['mim_test_command']}")
    return results


if __name__ == '__main__':
    main()
