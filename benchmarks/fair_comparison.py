"""The pre-registered fair comparison (docs/protocol.md): the six rows of a seed trained from one
init on one machine, every row scored at equal width on val and test, the per-seed results
written as they finish, and the paired per-seed gains with their 95 % t-intervals.

Run by ``tools/benchmark_demo.py``; a row's training and its probes are the demo's commands
(:class:`~benchmarks.demo_chain.DemoChain`)."""
import functools
import glob
import json
import math
import os.path as osp
import statistics

from cotap_mm.utils.fileio import atomic_save, atomic_write_text
from .demo_chain import ROOT, DemoChain
from .demo_presets import DENSE_OFF, prepare_work_dir
from .report import machine_info, markdown_table

__all__ = ['ROWS', 'PROBES', 'run_seed', 'ssl_gate', 'kmeans_readout', 'paired', 'collect',
           'render', 'render_diagnostics', 'render_oracle', 'render_primary', 'run_oracle_seed']

ROWS = ('init', 'control_image', 'control_cls', 'cotap', 'no_rank', 'no_oaf')
ORACLE_ROWS = dict(cotap_oracle='cotap', no_rank_oracle='no_rank')  # follow-up row: its base
PROBES = ('lbfgs_vit', 'lbfgs_full', 'kmeans_vit', 'concentration_vit')
SPLITS = ('val', 'test')
DIGITS = dict(lbfgs_vit=2, lbfgs_full=2, kmeans_vit=2, concentration_vit=3)  # in the tables
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262}  # two-sided 95 % quantiles of Student's t by degrees of freedom


def cotap_rows(embed_dims):
    """The rows trained with the CoTAP configuration: their options and whether they keep a
    trained object-aware filter."""
    return dict(
        control_cls=(DENSE_OFF, True),
        cotap=([], True),
        no_rank=(['model.loss_weights.cotap=0.'], True),
        no_oaf=(['model.backbone.with_oaf=False', f'model.patch_head.in_channels={embed_dims}',
                 f'model.cls_head.in_channels={embed_dims}'], False))


def kmeans_readout(chain, name):
    """``<name>_full_backbone.pth``: row ``name``'s ViT (which has no trained filter) with the
    CoTAP configuration's object-aware filter at its seeded initial weights and, as at CoTAP's
    first full bank, prototypes from the k-means of the row's own block-input layouts of
    ImageNet-style scenes (one per image, the bank's capacity of them in a seeded order, at the
    global crop size; a smaller folder is cycled)."""
    import torch
    from mmengine.config import Config

    from cotap_mm.datasets.image_list import list_images
    from cotap_mm.models.necks import PrototypeBank
    from cotap_mm.models.utils.loading import (build_backbone, get_normalization,
                                               load_backbone_weights)
    from cotap_mm.utils.images import load_squashed
    cfg = Config.fromfile(osp.join(chain.root, chain.configs['cotap']))
    torch.manual_seed(chain.seed)
    backbone, _ = build_backbone(cfg, out_type='featmap', overrides=dict(with_oaf=True))
    backbone.init_weights()
    load_backbone_weights(backbone, chain.rows[name]['checkpoint'], allow_missing=('oaf.',))
    bank_cfg = dict(cfg.model.bank)
    bank = PrototypeBank(backbone.embed_dims, capacity=bank_cfg['capacity'],
                         num_prototypes=cfg.model.backbone.num_prototypes,
                         kmeans_iters=bank_cfg.get('kmeans_iters', 3000))
    paths = sorted(list_images(chain.path('data', 'imagenet', 'train')))
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(chain.seed))
    size = cfg.model.backbone.img_size
    mean, std = get_normalization(cfg)
    picks = [order[i % len(paths)].item() for i in range(bank.capacity)]  # cycles if fewer
    with torch.no_grad():
        for s in range(0, bank.capacity, 64):
            x = torch.stack([load_squashed(paths[i], size, mean, std)[1]
                             for i in picks[s:s + 64]])
            _, extras = backbone(x, return_block_input=True)
            bank.update(extras['block_input'])
    kernel = bank.maybe_cluster(generator=torch.Generator().manual_seed(chain.seed))
    backbone.oaf.load_prototypes(kernel)
    dst = chain.path(f'{name}_full_backbone.pth')
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    atomic_save(dict(meta=dict(kmeans_readout_of=chain.rows[name]['checkpoint']),
                     state_dict=state), dst)
    return dst


def score_row(chain, name):
    """The protocol's probes of row ``name`` on val and test, and how each L-BFGS fit ended."""
    row = chain.rows[name]
    vit = chain.vit_checkpoint(name)
    full = row['checkpoint'] if row['with_oaf'] else kmeans_readout(chain, name)
    scores = {split: {} for split in SPLITS}
    fits = {}
    for probe, result in (('lbfgs_vit', chain.lbfgs_vit(name, 'probes')),
                          ('lbfgs_full', chain.converged_probe(f'{name}_lbfgs_full', full, True,
                                                               'probes'))):
        for split in SPLITS:
            scores[split][probe] = result['splits'][split]['mIoU']
        fits[probe] = dict(weight_decay=result['weight_decay'], fit=result['fit'],
                           selection=result['weight_decay_selection'])
    for split in SPLITS:
        common = [*chain.tool_args(vit, False), '--split', split]
        r = chain.tool_json('probes', 'analysis/cluster_segmentation.py', *common,
                            out=chain.path('analysis', f'{name}_kmeans_vit_{split}.json'))
        scores[split]['kmeans_vit'] = r['runs'][0]['mIoU']
        r = chain.tool_json('probes', 'analysis/semantic_concentration.py', *common,
                            out=chain.path('analysis', f'{name}_concentration_vit_{split}.json'))
        scores[split]['concentration_vit'] = r['ratio']
    return dict(scores, fits=fits)


def checkout_commit(root):
    """The commit of checkout ``root`` and whether its tracked files differ from it."""
    import subprocess

    def git(*args):
        return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    return git('rev-parse', 'HEAD'), bool(git('status', '--porcelain', '--untracked-files=no'))


def inputs_digest(chain):
    """SHA-256 of what every row of the seed starts from: the data folder (scenes, labels, kNN
    files) and the init backbone."""
    import hashlib
    import os
    h = hashlib.sha256()
    files = [osp.join(top, f) for top, _, names in os.walk(chain.path('data')) for f in names]
    for path in sorted(files) + [chain.path('init_backbone.pth')]:
        h.update(osp.relpath(path, chain.wd).encode())
        with open(path, 'rb') as f:
            h.update(f.read())
    return h.hexdigest()


def kept_stage(chain, name, commit, digest, resumed, fn, total=None):
    """Stage ``name`` of the seed, or its record from an earlier invocation of the same commit.

    A finished stage leaves ``<name>.done.json`` in the seed's work dir (its commit, the digest
    of its inputs, seconds, result and row); ``--resume`` keeps it instead of running the stage
    again, and adds ``name`` to the list ``resumed``."""
    path = chain.path(f'{name}.done.json')
    if osp.isfile(path):
        with open(path) as f:
            done = json.load(f)
        if done['commit'] != commit:
            raise SystemExit(f'benchmark_demo: {path} was written at commit {done["commit"]}, '
                             f'this checkout is at {commit}; resume from a checkout of that '
                             'commit, or run the seed afresh without --resume')
        if done['inputs'] != digest:
            raise SystemExit(f'benchmark_demo: the data or init of {chain.wd} differ from those '
                             f'{path} was trained on; run the seed afresh without --resume')
        chain.seconds[name] = done['seconds']
        if done['row'] is not None:
            chain.rows[name] = done['row']
        resumed.append(name)
        return done['result']
    result = chain.stage(name, fn, total)
    atomic_write_text(path, json.dumps(dict(commit=commit, inputs=digest,
                                            seconds=chain.seconds[name], result=result,
                                            row=chain.rows.get(name))))
    return result


def prepared_seed(work, seed, iters, preset, cache_dir, console, resume):
    """One seed's work dir with its data, init and kNN files made: the chain, ``keep`` (its
    stages through :func:`kept_stage`) and the record of the run that the seed's file holds
    beside the rows (filled in as the stages run)."""
    commit, dirty = checkout_commit(ROOT)
    if resume and dirty:
        raise SystemExit('benchmark_demo: --resume needs a checkout without local changes, so '
                         'that the commit says what trained the kept rows; commit or stash them')
    if not (resume and osp.isdir(work)):
        prepare_work_dir(work)
    d = DemoChain(work, seed, preset, 'supervised', console, cache_dir=cache_dir,
                  cotap_iters=iters)
    d.prepare()
    record = dict(seed=seed, protocol='docs/protocol.md', iters=iters, preset=preset,
                  commit=commit + ('+local changes' if dirty else ''),
                  machine=machine_info(d.p['device']), stage_seconds=d.seconds,
                  resumed_stages=[], init_cached=d.init_cached, knn_agreement=d.knn_agreement,
                  commands_log=osp.join(work, 'logs'))
    keep = functools.partial(kept_stage, d, commit=commit, digest=inputs_digest(d),
                             resumed=record['resumed_stages'])
    return d, keep, record


def run_seed(work_dir, seed, out_dir, iters=1000, preset='default',
             cache_dir='work_dirs/demo_cache', console=None, resume=False):
    """Every row of one seed and its probes; writes ``out_dir/seed_<seed>.json`` at the end.

    With ``resume``, the rows and probes that an earlier invocation at the same commit finished
    in the seed's work dir are kept (docs/protocol.md, 2026-12-07); data, init and kNN files are
    made again (they are deterministic), so every kept row reads the files it was trained on."""
    d, keep, record = prepared_seed(osp.join(work_dir, f'seed_{seed}'), seed, iters, preset,
                                    cache_dir, console, resume)
    keep('control_image', fn=d.image_level_control('control_image'), total=iters)
    for name, (options, with_oaf) in cotap_rows(d.p['embed_dims']).items():
        keep(name, fn=d.cotap(name, options, with_oaf), total=iters)
    result = dict(record, rows={
        name: keep(f'probes-{name}', fn=lambda progress, task, n=name: score_row(d, n))
        for name in ROWS})
    atomic_write_text(osp.join(out_dir, f'seed_{seed}.json'), json.dumps(result, indent=1) + '\n')
    return result


def oracle_knn_files(chain):
    """Oracle neighbours of both pretraining sets, as many per image as the init's kNN files
    hold, in ``oracle_nns/`` (outside the data folder whose digest ``--resume`` compares: they
    follow from it and the seed); the options that point the training data at them, and their
    class agreement."""
    import numpy as np

    from cotap_mm.evaluation.knn_agreement import (SUBSET_FOLDERS, synthetic_knn_agreement,
                                                   write_oracle_knn_file)
    options, agreement = [], {}
    for subset in SUBSET_FOLDERS:
        with np.load(chain.path('data', 'nns', f'nns_{subset}.npz')) as f:
            k = f['nns'].shape[1] - 1
        dst = write_oracle_knn_file(chain.path('data'), subset,
                                    chain.path('oracle_nns', f'nns_{subset}.npz'), k, chain.seed)
        options.append(f'train_dataloader.dataset.{subset}.nns_file={dst}')
        agreement[subset] = synthetic_knn_agreement(chain.path('data'), subset, dst, chain.seed)
    return options, agreement


def run_oracle_seed(work_dir, seed, out_dir, iters=1000, preset='default',
                    cache_dir='work_dirs/demo_cache', console=None, resume=False):
    """The registered follow-up of one seed (docs/protocol.md, "the ranking loss with oracle
    neighbours"): rows (c) and (d) trained on oracle kNN files, probed as the protocol's rows;
    writes ``out_dir/oracle_seed_<seed>.json``."""
    d, keep, record = prepared_seed(osp.join(work_dir, f'oracle_seed_{seed}'), seed, iters,
                                    preset, cache_dir, console, resume)
    oracle, record['oracle_agreement'] = oracle_knn_files(d)
    configurations, rows = cotap_rows(d.p['embed_dims']), {}
    for name, base in ORACLE_ROWS.items():
        options, with_oaf = configurations[base]
        keep(name, fn=d.cotap(name, [*options, *oracle], with_oaf), total=iters)
        rows[name] = keep(f'probes-{name}', fn=lambda progress, task, n=name: score_row(d, n))
    result = dict(record, rows=rows)
    atomic_write_text(osp.join(out_dir, f'oracle_seed_{seed}.json'),
                      json.dumps(result, indent=1) + '\n')
    return result


def ssl_gate(work_dir, out_dir, seed=0, iters=4000, preset='default',
             cache_dir='work_dirs/demo_cache', console=None):
    """The gate of the second table (docs/protocol.md): the self-distilled init after ``iters``
    steps against the seeded random-weight backbone, each scored with the primary probe on val
    (the gate) and test; writes ``out_dir/ssl_gate_seed_<seed>.json``. The trained init is
    cached like the supervised one, under a key of its steps."""
    scores, seconds, fits = {}, {}, {}
    for init in ('random', 'selfdistill'):
        work = osp.join(work_dir, f'ssl_gate_seed_{seed}', init)
        prepare_work_dir(work)
        d = DemoChain(work, seed, preset, init, console, cache_dir=cache_dir)
        d.p['selfdistill_iters'] = iters
        d.prepare()
        r = d.stage('probe', lambda progress, task: d.lbfgs_vit('init', 'probes'))
        scores[init] = {split: r['splits'][split]['mIoU'] for split in SPLITS}
        fits[init] = dict(weight_decay=r['weight_decay'], fit=r['fit'])
        seconds[init] = d.seconds
    gain = round(scores['selfdistill']['val'] - scores['random']['val'], 2)
    result = dict(seed=seed, protocol='docs/protocol.md', selfdistill_iters=iters, preset=preset,
                  probe='lbfgs_vit', scores=scores, fits=fits, val_gain=gain, passes=gain >= 5,
                  machine=machine_info(d.p['device']), stage_seconds=seconds)
    atomic_write_text(osp.join(out_dir, f'ssl_gate_seed_{seed}.json'),
                      json.dumps(result, indent=1) + '\n')
    return result


def paired(a, b):
    """Per-seed differences ``a - b`` with their mean, sample sd and 95 % t-interval."""
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean = statistics.mean(diffs)
    if n < 2:
        return dict(n=n, diffs=diffs, mean=mean, sd=None, lo=None, hi=None)
    sd = statistics.stdev(diffs)
    half = T_975[n - 1] * sd / math.sqrt(n)
    # unrounded: the tables round once, at each probe's digits
    return dict(n=n, diffs=diffs, mean=mean, sd=sd, lo=mean - half, hi=mean + half)


def collect(out_dir):
    """The per-seed files of ``out_dir`` merged: ``seeds`` -> seed -> row -> split -> probe, and
    ``diagnostics`` -> seed -> the kNN pairs' class agreement and, where the seed's row
    checkpoints were measured (``code_entropy/seed_<S>_<row>.json``), the teacher's patch codes."""
    seeds, diagnostics = {}, {}
    for path in sorted(glob.glob(osp.join(out_dir, 'seed_*.json'))):
        with open(path) as f:
            r = json.load(f)
        seeds[str(r['seed'])] = {name: {split: row[split] for split in SPLITS}
                                 for name, row in r['rows'].items()}
        diagnostics[str(r['seed'])] = dict(knn_agreement=r.get('knn_agreement'), code_entropy={})
    for path in sorted(glob.glob(osp.join(out_dir, 'code_entropy', 'seed_*_*.json'))):
        seed, row = osp.basename(path)[len('seed_'):-len('.json')].split('_', 1)
        with open(path) as f:
            codes = json.load(f)
        if seed in diagnostics:
            diagnostics[seed]['code_entropy'][row] = codes['teacher']
    oracle = {}
    for path in sorted(glob.glob(osp.join(out_dir, 'oracle_seed_*.json'))):
        with open(path) as f:
            r = json.load(f)
        oracle[str(r['seed'])] = dict(
            rows={name: {split: row[split] for split in SPLITS} for name, row in r['rows'].items()},
            knn_agreement=r['knn_agreement'], oracle_agreement=r['oracle_agreement'])
    return dict(protocol='docs/protocol.md', primary='test/lbfgs_vit', seeds=seeds,
                diagnostics=diagnostics, oracle=oracle)


COMPARISONS = (('cotap', 'control_cls'), ('cotap', 'no_rank'), ('cotap', 'init'),
               ('cotap', 'control_image'), ('cotap', 'no_oaf'))


def mean_sd(xs, digits):
    """``mean ± sd`` over seeds, or the one value of a single seed."""
    if len(xs) == 1:
        return f'{xs[0]:.{digits}f}'
    return f'{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}'


def gain_row(what, probe, p):
    """A table row of the paired gain ``p`` (:func:`paired`): what, probe, mean, 95 % interval
    and the per-seed differences, at the probe's digits."""
    d = DIGITS[probe]
    ci = f'[{p["lo"]:+.{d}f}, {p["hi"]:+.{d}f}]' if p['lo'] is not None else 'n/a'
    return [what, probe, f'{p["mean"]:+.{d}f}', ci, ' '.join(f'{x:+.{d}f}' for x in p['diffs'])]


def render(merged, split='test'):
    """Markdown: each row's mean +- sd per probe, and the paired gains with their intervals."""
    seeds = sorted(merged['seeds'], key=int)
    if not seeds:
        return 'No seed has been run yet.'
    values = {(row, probe): [merged['seeds'][s][row][split][probe] for s in seeds]
              for row in ROWS for probe in PROBES}

    rows = [[row] + [mean_sd(values[row, probe], DIGITS[probe]) for probe in PROBES]
            for row in ROWS]
    lines = markdown_table(['row', *PROBES], rows)
    gains = []
    for a, b in COMPARISONS:
        for probe in PROBES:
            p = paired(values[a, probe], values[b, probe])
            gains.append(gain_row(f'{a} − {b}', probe, p))
    return '\n'.join([f'{split}, seeds {", ".join(seeds)} (mean ± sd over seeds):', '', *lines,
                      '', f'Paired per-seed gains on {split} (95 % t-interval):', '',
                      *markdown_table(['comparison', 'probe', 'mean', '95 % interval',
                                       'per seed'], gains)])


def render_diagnostics(merged):
    """Markdown: per seed, the two registered gains beside what the protocol names to explain
    them: the kNN pairs' class agreement over random pairs (COCO-style scenes), the init's
    concentration and CoTAP's change of it, and the teacher's patch-code entropy (T = 0.02)."""
    seeds = sorted(merged['seeds'], key=int)
    rows = []
    for s in seeds:
        test = {row: merged['seeds'][s][row]['test'] for row in ROWS}
        diag = merged.get('diagnostics', {}).get(s, {})
        knn = (diag.get('knn_agreement') or {}).get('coco', {}).get('all')
        codes = diag.get('code_entropy', {})
        gain = {probe: {b: test['cotap'][probe] - test[b][probe] for b in ROWS}
                for probe in ('lbfgs_vit', 'concentration_vit')}
        rows.append([s, f"{gain['lbfgs_vit']['control_cls']:+.2f}",
                     f"{gain['lbfgs_vit']['no_rank']:+.2f}",
                     f"{knn['knn']:.3f} / {knn['random']:.3f} = {knn['ratio']:.2f}×"
                     if knn else 'n/a',
                     f"{test['init']['concentration_vit']:.3f}",
                     f"{gain['concentration_vit']['init']:+.3f}"]
                    + [f"{codes[row]['entropy@0.02']:.2f}" if row in codes else 'not measured'
                       for row in ('control_cls', 'cotap', 'no_rank')])
    return '\n'.join(markdown_table(
        ['seed', 'cotap − control_cls', 'cotap − no_rank', 'kNN class agreement (COCO)',
         'init concentration', 'cotap − init concentration', 'code entropy control_cls',
         'code entropy cotap', 'code entropy no_rank'], rows))


def render_oracle(merged, split='test'):
    """Markdown: the registered contrasts of the oracle-neighbour follow-up over the seeds that
    have both its rows and the protocol's, and whether each seed's init gave the kNN files of
    the protocol's run (their class agreement equal)."""
    seeds = sorted((s for s in merged.get('oracle', {}) if s in merged['seeds']), key=int)
    if not seeds:
        return 'No seed of the oracle-neighbour follow-up has been run yet.'

    def values(row, probe):
        return [(merged['oracle'][s]['rows'] if row in ORACLE_ROWS else merged['seeds'][s])
                [row][split][probe] for s in seeds]
    lines = []
    for probe in PROBES:
        c_o, d_o, c, d = (values(r, probe) for r in ('cotap_oracle', 'no_rank_oracle', 'cotap',
                                                      'no_rank'))
        for what, p in (('cotap_oracle − no_rank_oracle', paired(c_o, d_o)),
                        ('(cotap_oracle − no_rank_oracle) − (cotap − no_rank)',
                         paired([a - b for a, b in zip(c_o, d_o)], [a - b for a, b in zip(c, d)])),
                        ('cotap_oracle − cotap', paired(c_o, c))):
            lines.append(gain_row(what, probe, p))
    same = [s for s in seeds if merged['oracle'][s]['knn_agreement'] ==
            merged['diagnostics'].get(s, {}).get('knn_agreement')]
    agreement = ', '.join(
        f"{s}: {merged['oracle'][s]['oracle_agreement']['coco']['all']['knn']:.3f}"
        for s in seeds)
    return '\n'.join([
        f'Oracle neighbours, {split}, seeds {", ".join(seeds)}: paired per-seed contrasts '
        '(95 % t-interval).', '',
        *markdown_table(['contrast', 'probe', 'mean', '95 % interval', 'per seed'], lines), '',
        f'Class agreement of the oracle pairs (COCO-style scenes, mean Jaccard) per seed: '
        f'{agreement}. The init\'s kNN files equal the protocol run\'s (same class agreement) '
        f'on seeds: {", ".join(same) or "none"}.'])


def render_primary(merged, planned=5):
    """The primary metric in a few sentences, for README's and demo.md's leads: each row's test
    mIoU, the two registered comparisons with their per-seed gains and intervals, and whether
    each goal holds (decided once the ``planned`` seeds are in)."""
    seeds = sorted(merged['seeds'], key=int)
    if not seeds:
        return 'No seed of the protocol has been run yet.'

    def values(row):
        return [merged['seeds'][s][row]['test']['lbfgs_vit'] for s in seeds]

    def mean(row):
        return mean_sd(values(row), DIGITS['lbfgs_vit'])
    so_far = ' so far' if len(seeds) < planned else ''
    lines = [f'**Primary metric{so_far}** (test split, converged linear probe of the D-wide ViT '
             f'tokens, mIoU; {len(seeds)} of the {planned} registered seeds: {", ".join(seeds)}): '
             f'the init {mean("init")}, the data-matched control {mean("control_cls")}, CoTAP '
             f'{mean("cotap")}, CoTAP without the ranking loss {mean("no_rank")}.']
    for goal, (a, b, what) in enumerate((('cotap', 'control_cls', 'the data-matched control'),
                                         ('cotap', 'no_rank', 'CoTAP without the ranking loss')),
                                        start=1):
        p = paired(values(a), values(b))
        per_seed = ', '.join(f'{x:+.2f}' for x in p['diffs'])
        ci = f'95 % interval [{p["lo"]:+.2f}, {p["hi"]:+.2f}]' if p['lo'] is not None else \
            'no interval from one seed'
        if len(seeds) < planned:
            verdict = f'goal {goal} is decided at {planned} seeds'
        else:
            verdict = f'goal {goal} ({a} − {b} > 0) is ' + (
                'met' if p['lo'] > 0 else
                f'not met: the interval reaches {-p["lo"]:.2f} below zero')
        lines.append(f'CoTAP − {what}: {p["mean"]:+.2f} mIoU (per seed {per_seed}; {ci}); '
                     f'{verdict}.')
    return ' '.join(lines)
