"""The demo experiment over seeds (tools/benchmark_demo.py): the rows of one seed (the init, the
image-level control and the CoTAP ablations), the rescoring of an earlier run, and the collection
of runs made by separate invocations."""
import json
import os.path as osp

from .demo_chain import DemoChain
from .demo_presets import prepare_work_dir

__all__ = ['ablations', 'run_seed', 'rescore', 'collect']


def ablations(embed_dims):
    """Each CoTAP row's options and whether it has the object-aware filter; without it the
    heads take the D-wide ViT tokens."""
    return {
        'cotap': ([], True),
        'cotap_no_ap': (['model.loss_weights.cotap=0.'], True),
        'cotap_no_oaf': (['model.backbone.with_oaf=False',
                          f'model.patch_head.in_channels={embed_dims}',
                          f'model.cls_head.in_channels={embed_dims}'], False),
    }


def run_seed(work_dir, seed, rows, preset='default', cache_dir='work_dirs/demo_cache',
             cotap_iters=None, cotap_options=(), console=None):
    """All ``rows`` of one seed in ``work_dir/seed_<seed>``; returns the demo-style results
    dict with every row's scores."""
    work = osp.join(work_dir, f'seed_{seed}')
    prepare_work_dir(work)
    d = DemoChain(work, seed, preset, 'supervised', console, cotap_options, cache_dir, cotap_iters)
    d.prepare()
    cotap_rows = ablations(d.p['embed_dims'])
    for name in rows:
        if name == 'init_more':
            d.stage(name, d.image_level_control(name), total=d.cotap_iters)
        elif name in cotap_rows:
            options, with_oaf = cotap_rows[name]
            d.stage(name, d.cotap(name, options, with_oaf), total=d.cotap_iters)
    # OAF rows are also probed on their D-wide ViT tokens, the width of the init's features
    vit_rows = [d.vit_tokens(n) for n in rows if d.rows[n]['with_oaf']]
    d.evaluate(['pixels', *rows])
    d.evaluate(vit_rows, analyse=False)
    for name in vit_rows:  # fold the ViT-token scores into their rows
        d.rows[name[:-len('_vit')]]['vit_linear_miou'] = d.rows.pop(name)['linear_miou']
    chance = d.stage('chance', d.chance)
    return d.results(chance)


def rescore(work_dir, preset='default', cache_dir='work_dirs/demo_cache',
            console=None):
    """The analysis probes of every row of an earlier run in ``work_dir``, on its saved
    backbones; returns its per-seed results updated."""
    path = osp.join(work_dir, 'benchmark_demo.json')
    if not osp.isfile(path):
        raise SystemExit(f'--rescore: no earlier run in --work-dir ({path} does not exist)')
    with open(path) as f:
        results = json.load(f)['results']
    for r in results:
        work = osp.join(work_dir, f"seed_{r['seed']}")
        if console is not None:
            console.rule(f"seed {r['seed']}: rescoring {work}")
        d = DemoChain(work, r['seed'], preset, 'supervised', console, cache_dir=cache_dir)
        names = [n for n in r['rows'] if n != 'pixels']
        for name in names:
            ckpt = osp.join(work, f'{name}_backbone.pth')
            if not osp.isfile(ckpt):
                raise SystemExit(f'--rescore: {ckpt} is missing; rerun that seed')
            d.rows[name] = dict(checkpoint=ckpt, with_oaf=r['rows'][name].get('with_oaf', True))
        d.stage('analysis', d.analysis(names))
        for name in names:
            r['rows'][name].update({k: v for k, v in d.rows[name].items() if k != 'checkpoint'})
    return results


def collect(work_dir, seeds, rows):
    """The per-seed results of runs made earlier into ``work_dir`` (``seed_<s>/results.json``),
    each checked to hold ``rows``."""
    results = []
    for seed in seeds:
        path = osp.join(work_dir, f'seed_{seed}', 'results.json')
        if not osp.isfile(path):
            raise SystemExit(f'--collect: {path} does not exist; run that seed first '
                             f'(--seeds {seed} --work-dir {work_dir})')
        with open(path) as f:
            results.append(json.load(f))
        missing = [n for n in rows if n not in results[-1]['rows']]
        if missing:
            raise SystemExit(f'--collect: {path} has no rows {missing}; run them or drop them '
                             'from --rows')
    return results
