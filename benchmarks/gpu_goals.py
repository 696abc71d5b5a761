"""The GPU goals of docs/benchmarks.md, judged from the measurements of
``tools/benchmark_loss.py`` and ``tools/benchmark_train.py`` (used by ``tools/gpu_check.py``),
and the CUDA ``auto`` crossover of the CoTAP loss derived from the loss timings."""
from typing import List, Optional

__all__ = ['GOALS', 'crossover', 'goals']

# bound of each goal (ratios, or seconds for the exact loss at n = 1,048,576)
GOALS = dict(auto_time_vs_dense_4200=1.5, auto_memory_vs_dense_4200=0.05,
             exact_seconds_1048576=0.5, cotap_vs_plain_step=1.3)


def crossover(rows: List[dict]) -> Optional[int]:
    """Smallest measured n from which ``sorted`` is never slower than ``dense``."""
    t = {(r['impl'], r['n']): r['seconds'] for r in rows}
    ns = sorted(n for impl, n in t if impl == 'dense' and ('sorted', n) in t)
    for i, n in enumerate(ns):
        if all(t[('sorted', m)] <= t[('dense', m)] for m in ns[i:]):
            return n
    return None


def goals(loss_rows: List[dict], train_report: Optional[dict]) -> dict:
    """Each goal's measured value, its bound and whether it is met (None: not measured)."""
    by = {(r['impl'], r['n']): r for r in loss_rows}
    values = {}
    if ('auto', 4200) in by and ('dense', 4200) in by:
        auto, dense = by[('auto', 4200)], by[('dense', 4200)]
        values['auto_time_vs_dense_4200'] = auto['seconds'] / dense['seconds']
        values['auto_memory_vs_dense_4200'] = auto['peak_bytes'] / max(dense['peak_bytes'], 1)
    exact = [by[(i, 1048576)]['seconds'] for i in ('sorted', 'auto') if (i, 1048576) in by]
    if exact:
        values['exact_seconds_1048576'] = min(exact)
    if train_report:
        values['cotap_vs_plain_step'] = train_report['ratio']['median']
    result = {name: dict(bound=bound, value=values.get(name),
                         met=None if name not in values else values[name] <= bound)
              for name, bound in GOALS.items()}
    loader = (train_report or {}).get('loader')
    if loader:
        step_per_s = 1000 / train_report['timing']['cotap']['median_ms']
        result['loader_not_the_bottleneck'] = dict(
            bound='loader batches/s >= CoTAP steps/s', value=loader['batches_per_s'] / step_per_s,
            met=loader['batches_per_s'] >= step_per_s)
    return result
