"""The demo benchmark's numbers over seeds (``tools/benchmark_demo.py``): mean and sample std of
every row and probe, CoTAP's gains over the init and the image-level control, and the markdown
tables of docs/benchmarks.md. A seed's result is the ``results.json`` the demo writes."""
import statistics

__all__ = ['ROWS', 'METRICS', 'summarize', 'table_lines', 'pm']

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
