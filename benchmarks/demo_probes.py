"""The demo's probes of its rows: the same ``mim train/test mmseg`` linear probe for every
backbone, the raw-pixel floor, and the analysis probes (semantic concentration, k-means cluster
probe, converged linear probe); the pictures (docs/demo.md)."""
import os
import os.path as osp
import re

from cotap_mm.models.utils.loading import read_checkpoint, select_backbone_state
from cotap_mm.utils.fileio import atomic_save
from .demo_presets import NUM_CLASSES

__all__ = ['DemoProbes', 'WEIGHT_DECAYS']

# the weight decays the primary probe chooses from on the training scenes (docs/protocol.md)
WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)
_MIOU = re.compile(r'mIoU:\s*([0-9.]+)')


class DemoProbes:
    """The probe stages of :class:`~benchmarks.demo_chain.DemoChain` (a mixin: it uses the
    chain's ``rows``, ``configs``, ``p``, ``path``, ``run``, ``tool`` and ``tool_json``).

    A *row* is one backbone that is probed; ``self.rows[name]`` says how (``checkpoint``,
    ``with_oaf``) and collects its scores.
    """

    def vit_tokens(self, name):
        """Row ``<name>_vit``: row ``name`` without its object-aware filter, i.e. its D-wide ViT
        tokens, probed like a backbone that never had one (the init's width); written once."""
        if f'{name}_vit' in self.rows:
            return f'{name}_vit'
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

    def tool_args(self, checkpoint, with_oaf):
        """The arguments every analysis tool takes for one backbone on the labelled scenes."""
        args = [self.configs['probe'], checkpoint, '--data-root', self.path('data', 'seg'),
                '--num-classes', NUM_CLASSES, '--size', self.p['size'], '--num-workers', 0,
                '--device', self.p['device'], '--seed', self.seed]
        return args if with_oaf else args + ['--cfg-options', 'model.backbone.with_oaf=False']

    def vit_checkpoint(self, name):
        """Row ``name``'s D-wide ViT tokens: its checkpoint, without the filter if it has one."""
        row = self.rows[name]
        return self.rows[self.vit_tokens(name)]['checkpoint'] if row['with_oaf'] else \
            row['checkpoint']

    def converged_probe(self, tag, checkpoint, with_oaf, stage):
        """The protocol's converged linear probe (docs/protocol.md) of a backbone: weight decay
        chosen on the training scenes, scored on val and test; ``analysis/<tag>.json``."""
        return self.tool_json(stage, 'analysis/linear_segmentation.py',
                              *self.tool_args(checkpoint, with_oaf), '--iters',
                              self.p['lbfgs_iters'], '--splits', 'val', 'test', '--weight-decay',
                              *WEIGHT_DECAYS, out=self.path('analysis', f'{tag}.json'))

    def lbfgs_vit(self, name, stage='primary'):
        """The primary probe of docs/protocol.md on row ``name``: its ViT tokens."""
        return self.converged_probe(f'{name}_lbfgs_vit', self.vit_checkpoint(name), False, stage)

    def primary(self, names):
        def fn(progress, task):
            for name in names:
                r = self.lbfgs_vit(name)
                self.rows[name]['lbfgs_vit'] = {s: r['splits'][s]['mIoU'] for s in r['splits']}
        return fn

    def analysis(self, names):
        """Semantic concentration, the k-means cluster probe and the converged (L-BFGS) linear
        probe of each row on the labelled scenes (the probe's resolution)."""
        def fn(progress, task):
            for name in names:
                row = self.rows[name]
                common = self.tool_args(row['checkpoint'], row['with_oaf'])
                conc = self.tool_json('analysis', 'analysis/semantic_concentration.py', *common,
                                      out=self.path('analysis', f'{name}_concentration.json'))
                cluster = self.tool_json('analysis', 'analysis/cluster_segmentation.py', *common,
                                         out=self.path('analysis', f'{name}_clusters.json'))
                lbfgs = self.tool_json('analysis', 'analysis/linear_segmentation.py', *common,
                                       '--iters', self.p['lbfgs_iters'],
                                       out=self.path('analysis', f'{name}_linear_lbfgs.json'))
                row.update(concentration=dict(intra=conc['intra'], inter=conc['inter'],
                                              gap=conc['gap'], ratio=conc['ratio']),
                           cluster_miou=cluster['runs'][0]['mIoU'], lbfgs_miou=lbfgs['mIoU'])
        return fn

    def chance(self, progress, task):
        r = self.tool_json('chance', 'analysis/chance_miou.py', self.path('data', 'seg'),
                           '--num-classes', NUM_CLASSES,
                           out=self.path('analysis', 'chance_miou.json'))
        return r['mIoU']

    def pictures(self, progress, task):
        """PCA of the init's and CoTAP's patch features on the same validation scenes
        (``pictures/pca_init_vs_cotap.png``), and the CoTAP backbone's PCA / prototype /
        foreground pictures."""
        seg_val = self.path('data', 'seg', 'img_dir', 'val')
        images = sorted(os.listdir(seg_val))[:self.p['num_pictures']]
        paths = [osp.join(seg_val, f) for f in images]
        self.run('pictures', self.tool(
            'analysis/compare_pca.py', self.configs['probe'], self.rows['init']['checkpoint'],
            self.rows['cotap']['checkpoint'], '--images', *paths, '--titles', 'init', 'CoTAP',
            '--size', 192, '--device', self.p['device'], '--out',
            self.path('pictures', 'pca_init_vs_cotap.png')))
        # only backbones with an object-aware filter have prototype pictures
        for name in [n for n in ('init', 'cotap') if self.rows[n]['with_oaf']]:
            self.run('pictures', self.tool(
                'visualize.py', self.configs['probe'], self.rows[name]['checkpoint'], *paths,
                '--out-dir', self.path('pictures', name), '--size', 192))

    def evaluate(self, names, analyse=True):
        """Linear probes of the rows ``names``; cluster and concentration probes too unless
        ``analyse`` is False."""
        for name in names:
            self.stage(f'probe-{name}', self.probe(name), total=self.p['probe_iters'])
        if analyse:
            self.stage('analysis', self.analysis([n for n in names if n != 'pixels']))
