"""The table ``tools/demo.py`` prints from the ``results.json`` the demo writes."""

__all__ = ['INIT_NAMES', 'PRIMARY_TITLES', 'print_demo_results']

INIT_NAMES = dict(supervised='supervised image classifier, a stand-in for DINO',
                  random='seeded random weights', selfdistill='image-level self-distillation')
PRIMARY_TITLES = dict(init='init', control_cls='data-matched control (CLS losses only)',
                      cotap='CoTAP')


def _fmt(value, spec):
    return '-' if value is None else format(value, spec)


def print_demo_results(results, console):
    """The table of one demo run (``tools/demo.py``) and its seconds per stage."""
    from rich.table import Table
    rows = results['rows']
    primary = results['primary']
    table = Table(title='Primary metric (docs/protocol.md): converged linear probe of the D-wide '
                  f"ViT tokens, mIoU %, after {results['cotap_iters']} steps")
    for col in ('weights', 'test', 'val', 'gain of CoTAP (test)'):
        table.add_column(col, justify='left' if col == 'weights' else 'right')
    for name in primary:  # the demo chain's PRIMARY_ROWS, in its order
        gain = primary['cotap']['test'] - primary[name]['test']
        table.add_row(PRIMARY_TITLES[name], f"{primary[name]['test']:.2f}", f"{primary[name]['val']:.2f}",
                      '' if name == 'cotap' else f'{gain:+.2f}')
    console.print(table)
    table = Table(title='The demo\'s other probes (val): the mmseg linear probe of each '
                  'backbone\'s own output, k-means, concentration')
    for col in ('weights', 'linear mIoU (%)', 'linear, L-BFGS (%)', 'k-means mIoU (%)',
                'concentration'):
        table.add_column(col, justify='left' if col == 'weights' else 'right')
    table.add_row('chance level (train label frequencies)', f"{results['chance_miou']:.2f}",
                  '', '', '')
    table.add_row('raw 8x8 pixel patches (the floor)', f"{results['pixels_miou']:.2f}", '', '',
                  '')
    for name, title in (('init', f"init ({INIT_NAMES[results['init']]})"),
                        ('cotap', f"CoTAP, {results['cotap_iters']} iterations from the init")):
        row = rows[name]
        table.add_row(title, f"{row['linear_miou']:.2f}", _fmt(row.get('lbfgs_miou'), '.2f'),
                      _fmt(row.get('cluster_miou'), '.2f'),
                      _fmt((row.get('concentration') or {}).get('ratio'), '.3f'))
    table.add_row('gain of CoTAP over its init', f"{results['gain']:+.2f}",
                  _fmt(results.get('lbfgs_gain'), '+.2f'), '', '')
    console.print(table)
    times = Table(title='seconds per stage')
    for name in results['stage_seconds']:
        times.add_column(name, justify='right')
    times.add_column('total', justify='right')
    times.add_row(*[f'{s:.0f}' for s in results['stage_seconds'].values()],
                  f"{results['total_seconds']:.0f}")
    console.print(times)
    for subset, agreement in (results.get('knn_agreement') or {}).items():
        console.print(f'kNN pairs of the {subset} scenes share classes (mean Jaccard, pairs / '
                      'random pairs): ' + ', '.join(
                          f"{kind} {a['knn']:.3f} / {a['random']:.3f}"
                          for kind, a in agreement.items()))
    if results.get('init_cached'):
        console.print(f"init reused from the cache: {results['init_cached']}")
