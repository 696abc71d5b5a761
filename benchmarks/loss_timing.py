"""Measuring ContinuousAPLoss: the time and peak extra memory of one impl at one list length, its
accuracy against ``dense``, and the markdown table of ``tools/benchmark_loss.py``.

:func:`time_case` is meant to run in a fresh process per (impl, n), so that its peak memory is its
own: on CPU the peak resident set size (VmHWM, reset through /proc/self/clear_refs once the
inputs exist), on CUDA ``torch.cuda.max_memory_allocated`` above the inputs.
"""
import statistics
import time
from typing import Dict, Sequence, Tuple

import torch

from cotap_mm.models.losses import continuous_ap_loss, select_impl
from .report import fmt_bytes, peak_memory_of

__all__ = ['IMPLS', 'QUADRATIC', 'make_inputs', 'time_case', 'max_abs_diff', 'add_diffs',
           'render_table']

IMPLS = ('dense', 'sorted', 'auto')
QUADRATIC = ('dense',)  # O(n^2) time and memory


def make_inputs(n: int, device: str, seed: int = 0):
    """A CoTAP-like list: cosine similarities in [-0.4, 1], 1/6 positives (5 of 30 rows)."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(n, generator=gen) * 1.4 - 0.4
    pred = (target + 0.2 * torch.randn(n, generator=gen)).clamp(-1, 1)
    pos_mask = torch.rand(n, generator=gen) < 1 / 6
    return pred.to(device), target.to(device), pos_mask.to(device)


def time_case(impl: str, n: int, device: str, repeats: int) -> dict:
    """Median forward+backward seconds over ``repeats`` (after one warm-up that also measures the
    peak extra memory) of ``impl`` at length ``n``, and the impl ``auto`` chose."""
    pred, target, pos_mask = make_inputs(n, device)
    cuda = device.startswith('cuda')

    def step():
        p = pred.detach().requires_grad_(True)
        continuous_ap_loss(p, target, pos_mask, impl=impl).backward()
        if cuda:
            torch.cuda.synchronize()

    peak = peak_memory_of(step, cuda)['extra']
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    chosen = select_impl(n, torch.device(device)) if impl == 'auto' else impl
    return dict(impl=impl, n=n, seconds=statistics.median(times), peak_bytes=max(peak, 0),
                chosen=chosen)


def max_abs_diff(impls: Sequence[str], n: int, device: str) -> Dict[str, float]:
    """For each impl, the largest absolute difference of the loss and of its gradient to
    ``dense`` on the same float32 inputs."""

    def loss_and_grad(impl):
        pred, target, pos_mask = make_inputs(n, device)
        p = pred.detach().requires_grad_(True)
        loss = continuous_ap_loss(p, target, pos_mask, impl=impl)
        loss.backward()
        return loss.detach(), p.grad

    ref_loss, ref_grad = loss_and_grad('dense')
    diffs = {}
    for impl in impls:
        loss, grad = loss_and_grad(impl)
        diffs[impl] = max(abs(loss.item() - ref_loss.item()), (grad - ref_grad).abs().max().item())
    return diffs


def add_diffs(results: Dict[Tuple[str, int], dict], sizes: Sequence[int],
              impls: Sequence[str], device: str) -> None:
    """Set ``results[(impl, n)]['diff']`` (:func:`max_abs_diff`) at every n where dense ran."""
    for n in sizes:
        if ('dense', n) in results:
            ran = [impl for impl in impls if (impl, n) in results]
            for impl, diff in max_abs_diff(ran, n, device).items():
                results[(impl, n)]['diff'] = diff


def render_table(results: Dict[Tuple[str, int], dict], sizes: Sequence[int],
                 impls: Sequence[str]) -> str:
    """The markdown table: one row per (n, impl), relative to dense where dense ran."""
    lines = ['| n | impl | fwd+bwd time | peak extra memory | max abs diff to dense | vs dense time '
             '| vs dense memory |', '|---:|---|---:|---:|---:|---:|---:|']
    for n in sizes:
        dense = results.get(('dense', n))
        for impl in impls:
            r = results.get((impl, n))
            if r is None:
                lines.append(f'| {n:,} | {impl} | skipped (O(n²)) | | | | |')
                continue
            name = f'auto → {r["chosen"]}' if impl == 'auto' else impl
            diff = r.get('diff')
            diff = '' if diff is None else f'{diff:.1e}'
            rel_t = rel_m = ''
            if dense and impl != 'dense':
                rel_t = f'{r["seconds"] / dense["seconds"]:.3f}×'
                rel_m = f'{100 * r["peak_bytes"] / max(dense["peak_bytes"], 1):.1f} %'
            lines.append(f'| {n:,} | {name} | {r["seconds"]:.3f} s | {fmt_bytes(r["peak_bytes"])} '
                         f'| {diff} | {rel_t} | {rel_m} |')
    return '\n'.join(lines)
