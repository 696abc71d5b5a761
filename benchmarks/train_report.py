"""A training-step benchmark report (the dict ``tools/benchmark_train.py`` writes as JSON) as
tables: rows of strings and a markdown subsection, printed and written into docs/benchmarks.md."""
from typing import Dict, List

from .report import fmt_bytes, markdown_table

__all__ = ['HEADERS', 'table_rows', 'describe', 'summary', 'heading', 'overhead',
           'render_markdown', 'merge_runs']


def table_rows(report: dict) -> Dict[str, List[List[str]]]:
    """The report as rows of strings: 'steps', 'breakdown' and 'loader' tables."""
    steps = []
    for name, label in (('cotap', 'CoTAP step'), ('plain', 'plain DINO-style step')):
        t, m = report['timing'][name], report['memory'][name]
        steps.append([label, f'{t["median_ms"]:.1f}', f'{t["p90_ms"]:.1f}',
                      f'{1000 / t["median_ms"]:.2f}', fmt_bytes(m['extra']),
                      fmt_bytes(m['peak'])])
    r = report['ratio']
    steps.append(['ratio CoTAP / plain', f'{r["median"]:.2f}×', f'{r["p90"]:.2f}×', '',
                  f'{r["memory_extra"]:.2f}×', f'{r["memory_peak"]:.2f}×'])
    rows = dict(steps=steps, breakdown=[], loader=[])
    bd = report.get('breakdown') or {}
    if bd:
        names = list(bd['cotap'])
        names += [n for n in bd['plain'] if n not in names]
        names.sort(key=lambda n: n.startswith(('other', 'total')))  # keep those last
        total = bd['cotap'].get('total (profiled)', 0) or 1
        for n in names:
            c, p = bd['cotap'].get(n), bd['plain'].get(n)
            share = '' if c is None or n.startswith('total') else f'{100 * c / total:.0f} %'
            rows['breakdown'].append([n, '' if c is None else f'{c:.1f}', share,
                                      '' if p is None else f'{p:.1f}'])
    if report.get('kmeans_s') is not None:
        rows['breakdown'].append(['(one-time k-means, not per step)',
                                  f'{1000 * report["kmeans_s"]:.1f}', '', ''])
    ld = report.get('loader')
    if ld:
        step_bps = 1000 / report['timing']['cotap']['median_ms']
        workers = f'{ld["num_workers"]} worker{"s" if ld["num_workers"] != 1 else ""}'
        rows['loader'] = [
            [f'loader, {workers}', f'{ld["batches_per_s"]:.2f}', f'{ld["images_per_s"]:.1f}',
             f'{ld["batches_per_s"] / step_bps:.2f}×'],
            ['CoTAP step', f'{step_bps:.2f}', f'{step_bps * ld["items_per_batch"] * 4:.1f}',
             '1.00×'],
        ]
    return rows


HEADERS = dict(
    steps=['step', 'median ms/iter', 'p90 ms/iter', 'iter/s', 'peak extra memory',
           'peak memory'],
    breakdown=['section (profiled iteration)', 'CoTAP ms', 'CoTAP share', 'plain ms'],
    loader=['producer / consumer', 'batches/s', 'source images/s', 'vs CoTAP step'],
)


def describe(report: dict) -> str:
    c = report['config']
    m = report['machine']
    where = m.get('gpu') or f'{m["cpu"]}, {m["cores"]} cores'
    threads = m['torch_threads']
    load = ', '.join(str(x) for x in m['load_average'])
    load_end = ', '.join(str(x) for x in m.get('load_average_end', []))
    return (f'{where}; {threads} torch thread{"s" if threads != 1 else ""}; torch {m["torch"]}, '
            f'Python {m["python"]}; device `{m["device"]}`, {"AMP fp16" if c["amp"] else "fp32"}; '
            f'load average (1, 5, 15 min) {load} at the start, {load_end} at the end; '
            f'{report["date"]}.')


def summary(report: dict) -> str:
    c = report['config']
    plain = "CoTAP's (with OAF)" if c['plain_backbone'] == 'same' else 'bare ViT (no OAF)'
    plural = lambda n, word: f'{n} {word}{"s" if n != 1 else ""}'  # noqa: E731
    return (f'median / p90 of {plural(c["iters"], "interleaved iteration")} of each step after '
            f'{plural(c["warmup"], "warm-up iteration")}, one reused batch; plain step backbone: '
            f'{plain}; per-rank queues {tuple(c["queue_sizes"])} (global / {c["world_size"]}); '
            'bank and queues full, k-means done; breakdown: mean of '
            f'{plural(c.get("breakdown_iters", 1), "profiled iteration")} (noisier than the '
            'timed medians).')


def heading(report: dict) -> str:
    """One docs subsection per setting; a rerun of the same setting replaces it."""
    c, m = report['config'], report['machine']
    where = (f'GPU ({m["gpu"]})' if m.get('gpu') else 'CPU')
    threads = f', {c["threads"]} thread{"s" if c["threads"] > 1 else ""}' if not m.get('gpu') \
        else ''
    plain = ', plain step on the bare ViT' if c.get('plain_backbone') == 'vit' else ''
    return (f'### {where}{", AMP" if c["amp"] else ", fp32"}, `--arch {c["arch"]}`, batch '
            f'{c["batch_size"]}{threads}{plain}')


def overhead(report: dict, top: int = 5) -> str:
    """The sections that make up most of CoTAP's extra time over the plain step."""
    bd = report.get('breakdown')
    if not bd:
        return ''
    diffs = {k: v - bd['plain'].get(k, 0.) for k, v in bd['cotap'].items()
             if not k.startswith('total')}
    extra = bd['cotap']['total (profiled)'] - bd['plain']['total (profiled)']
    parts = sorted(diffs.items(), key=lambda kv: -kv[1])[:top]
    return (f'CoTAP minus plain (profiled iteration): {extra:+.1f} ms; largest parts: ' +
            ', '.join(f'{k} {v:+.1f} ms' for k, v in parts) + '.')


def render_markdown(report: dict) -> str:
    c = report['config']
    rows = table_rows(report)
    lines = [
        heading(report), '',
        f'Command: `{report["command"]}`', '',
        f'Crops: {c["crops"].replace(" crops per image", " per image")}.', '',
        f'Machine: {describe(report)}', '',
        f'Setting: {summary(report)}', '',
    ]
    lines += markdown_table(HEADERS['steps'], rows['steps'])
    lines += ['', f'Peak memory: {report["memory"]["cotap"]["method"]}.', '']
    if rows['breakdown']:
        lines += markdown_table(HEADERS['breakdown'], rows['breakdown']) + ['']
        lines += [overhead(report), '']
    if rows['loader']:
        lines += markdown_table(HEADERS['loader'], rows['loader']) + ['']
    return '\n'.join(lines).rstrip('\n')


def merge_runs(body_old: str, body_new: str) -> str:
    """Keep one subsection per ``### `--arch ...`, batch ...`` heading; the new one replaces the
    old one of the same heading."""
    def split(body):
        parts, order = {}, []
        for chunk in ('\n' + body).split('\n### ')[1:]:
            heading = chunk.split('\n', 1)[0]
            parts[heading] = '### ' + chunk.strip('\n')
            order.append(heading)
        return parts, order
    old, order = split(body_old)
    new, new_order = split(body_new)
    old.update(new)
    order += [h for h in new_order if h not in order]
    return '\n\n'.join(old[h] for h in order)
