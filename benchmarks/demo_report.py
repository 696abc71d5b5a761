"""The demo's numbers: the table ``tools/demo.py`` prints, and for ``tools/benchmark_demo.py``
the mean and sample std over seeds of every row and probe, CoTAP's gains over the init and the
image-level control, their console summary and the docs/benchmarks.md section. A seed's result
is the ``results.json`` the demo writes."""
import statistics

__all__ = ['ROWS', 'METRICS', 'INIT_NAMES', 'summarize', 'table_lines', 'pm',
           'print_demo_results', 'print_summary', 'benchmark_section']

INIT_NAMES = dict(supervised='supervised image classifier, a stand-in for DINO',
                  random='seeded random weights', selfdistill='image-level self-distillation')

# row -> its label in the tables
ROWS = {
    'init': '(a) init (supervised image classifier)',
    'init_more': '(b) init + N steps of its image-level loss',
    'cotap': '(c) CoTAP, N steps from the init',
    'cotap_no_ap': '(d) CoTAP without the ranking loss',
    'cotap_no_oaf': '(e) CoTAP without the object-aware filter',
}
METRICS = ('linear_miou', 'lbfgs_miou', 'vit_linear_miou', 'cluster_miou', 'concentration')


def _score(row, metric):
    if metric == 'vit_linear_miou':  # the row's ViT tokens: its own probe when it has no OAF
        return row.get('vit_linear_miou', row.get('linear_miou'))
    value = row.get(metric)
    return value['ratio'] if metric == 'concentration' and value is not None else value


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float('nan')


def summarize(results, rows):
    """Per row and metric: mean and sample std (n - 1) over seeds; gains of CoTAP over the
    init and the image-level control per seed, in linear mIoU (``gains``) and in the converged
    L-BFGS linear probe (``lbfgs_gains``, when every seed has it)."""
    out = dict(rows={}, gains={}, lbfgs_gains={})
    for name in rows:
        out['rows'][name] = {m: dict(zip(('mean', 'std'), _mean_std(
            [_score(r['rows'][name], m) for r in results]))) for m in METRICS}
    for key, metric in (('gains', 'linear_miou'), ('lbfgs_gains', 'lbfgs_miou')):
        for ref in ('init', 'init_more'):
            if ref not in rows or any(r['rows'][n].get(metric) is None for r in results
                                      for n in ('cotap', ref)):
                continue
            gains = [r['rows']['cotap'][metric] - r['rows'][ref][metric] for r in results]
            mean, std = _mean_std(gains)
            out[key][ref] = dict(per_seed=gains, mean=mean, std=std,
                                 all_positive=all(g > 0 for g in gains))
    return out


def pm(stat, spec='.2f'):
    if stat['mean'] is None:
        return '-'
    return f"{stat['mean']:{spec}} +- {stat['std']:{spec}}"


def table_lines(results, summary, rows):
    seeds = ', '.join(str(r['seed']) for r in results)
    lines = [f'| row (seeds {seeds}) | linear mIoU | linear mIoU, L-BFGS | linear mIoU, ViT '
             'tokens | k-means mIoU | concentration ratio |', '|---|---|---|---|---|---|']
    pix = _mean_std([r['pixels_miou'] for r in results])
    chance = _mean_std([r['chance_miou'] for r in results])
    lines.append(f'| chance level | {chance[0]:.2f} | | | | |')
    lines.append(f'| raw 8x8 pixel patches | {pix[0]:.2f} +- {pix[1]:.2f} | | | | |')
    for name in rows:
        s = summary['rows'][name]
        lines.append(f"| {ROWS[name]} | {pm(s['linear_miou'])} | {pm(s['lbfgs_miou'])} | "
                     f"{pm(s['vit_linear_miou'])} | {pm(s['cluster_miou'])} | "
                     f"{pm(s['concentration'], '.3f')} |")
    lines += ['', '| seed | ' + ' | '.join(f'{n} linear / L-BFGS / k-means / ratio'
                                          for n in rows) +
              ' | CoTAP - (a), linear / L-BFGS | CoTAP - (b), linear / L-BFGS |',
              '|---' * (len(rows) + 3) + '|']
    for i, r in enumerate(results):
        cells = []
        for name in rows:
            row = r['rows'][name]
            ratio = _score(row, 'concentration')
            cells.append(' / '.join(_fmt(v, spec) for v, spec in (
                (row['linear_miou'], '.2f'), (row.get('lbfgs_miou'), '.2f'),
                (row.get('cluster_miou'), '.2f'), (ratio, '.3f'))))
        gains = [' / '.join(f"{summary[key][ref]['per_seed'][i]:+.2f}"
                            if ref in summary.get(key, {}) else '-'
                            for key in ('gains', 'lbfgs_gains'))
                 for ref in ('init', 'init_more')]
        lines.append(f"| {r['seed']} | " + ' | '.join(cells + gains) + ' |')
    return lines


def _fmt(value, spec):
    return '-' if value is None else format(value, spec)


def print_demo_results(results, console):
    """The table of one demo run (``tools/demo.py``) and its seconds per stage."""
    from rich.table import Table
    rows = results['rows']
    table = Table(title='CoTAP demo on the synthetic scenes (val): dense probes of frozen '
                  'features')
    for col in ('weights', 'linear mIoU (%)', 'linear, L-BFGS (%)', 'k-means mIoU (%)',
                'concentration'):
        table.add_column(col, justify='left' if col == 'weights' else 'right')
    table.add_row('chance level (train label frequencies)', f"{results['chance_miou']:.2f}",
                  '', '', '')
    table.add_row('raw 8x8 pixel patches (the floor)', f"{results['pixels_miou']:.2f}", '', '',
                  '')
    for name, title in (('init', f"init ({INIT_NAMES[results['init']]})"),
                        ('cotap', f"CoTAP, {results['cotap_iters']} iterations from the init"),
                        ('cotap_vit', 'CoTAP, its ViT tokens only (the init\'s width)')):
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


def print_summary(results, summary, rows, console):
    """The benchmark's mean +- std table and CoTAP's gains per seed, on the console."""
    from rich.table import Table
    table = Table(title='CoTAP demo over seeds (val): mean +- std')
    for col in ('row', 'linear mIoU', 'linear, L-BFGS', 'linear, ViT tokens', 'k-means mIoU',
                'concentration'):
        table.add_column(col, justify='left' if col == 'row' else 'right')
    for name in rows:
        s = summary['rows'][name]
        table.add_row(ROWS[name], pm(s['linear_miou']), pm(s['lbfgs_miou']),
                      pm(s['vit_linear_miou']), pm(s['cluster_miou']),
                      pm(s['concentration'], '.3f'))
    console.print(table)
    for key, probe in (('gains', 'linear'), ('lbfgs_gains', 'linear, L-BFGS')):
        for ref, g in summary[key].items():
            console.print(f"CoTAP - {ROWS[ref]} ({probe}): {g['mean']:+.2f} +- {g['std']:.2f} "
                          f"(per seed {', '.join(f'{x:+.2f}' for x in g['per_seed'])})")


def benchmark_section(results, summary, rows, argv, machine, preset='default', rescored=False,
                      collected=False) -> str:
    """The docs/benchmarks.md section of a benchmark run: command, machine, protocol, tables
    and gains. ``machine`` is the one-line description of the machine it ran on."""
    r0 = results[0]
    seeds = ' '.join(str(r['seed']) for r in results)
    note = (' The rows were re-scored (`--rescore`: the analysis probes only, nothing '
            'trained) on the backbones of the earlier run `python tools/benchmark_demo.py '
            f'--seeds {seeds}` in the same work dir.' if rescored else '')
    if collected:
        note += (' The seeds were trained and scored by earlier invocations into the same '
                 f"work dir (`python tools/benchmark_demo.py --seeds S --cotap-iters "
                 f"{r0['cotap_iters']} --rows {' '.join(rows)}`, S among {seeds}) and "
                 'summarised by this command (`--collect`: nothing trained or scored).')
    gains = '; '.join(
        f"{probe}CoTAP - {ROWS[ref][:3]}: {g['mean']:+.2f} +- {g['std']:.2f} "
        f"({'every seed positive' if g['all_positive'] else 'not every seed positive'})"
        for key, probe in (('gains', ''), ('lbfgs_gains', 'L-BFGS probe: '))
        for ref, g in summary.get(key, {}).items())
    return '\n'.join([
        f'Command: `python tools/benchmark_demo.py {" ".join(argv)}`', '',
        f'Machine: {machine}, CPU only. '
        f"Preset `{preset}`; N = {r0['cotap_iters']} steps for CoTAP and the image-level "
        'control; every row of a seed starts from the same data, init and kNN files and is '
        'scored by the same probes (linear: the row\'s own features, 2D wide with the OAF; '
        '"ViT tokens": the same probe on its D-wide ViT tokens; "L-BFGS": the converged linear '
        'probe, tools/analysis/linear_segmentation.py); std is the sample std over seeds.'
        + note, '',
        *table_lines(results, summary, rows), '', f'Linear-probe gains: {gains}.'])
