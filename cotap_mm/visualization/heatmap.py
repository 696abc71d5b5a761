"""A class-by-class matrix as a heat map PNG (the semantic-concentration tool's picture)."""
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np

from cotap_mm.utils.fileio import atomic_open

__all__ = ['save_matrix_heatmap']


def save_matrix_heatmap(path: str, names: Sequence, matrix, title: str,
                        label: str = 'mean cosine (diagonal: across images)',
                        vmin: float = -1.0, vmax: float = 1.0) -> Optional[str]:
    """The (K, K) ``matrix`` drawn with matplotlib's Agg canvas (no pyplot state, so it is
    safe in-process), class ``names`` on the axes when K <= 40; written atomically. Returns
    ``path``, or None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    K = len(names)
    side = min(12.0, 3.0 + 0.25 * K)
    fig = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.asarray(matrix, dtype=np.float32), cmap='RdBu_r', vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, label=label)
    if K <= 40:
        ax.set_xticks(range(K), [str(n) for n in names], rotation=90, fontsize=7)
        ax.set_yticks(range(K), [str(n) for n in names], fontsize=7)
    ax.set_xlabel('class')
    ax.set_ylabel('class')
    ax.set_title(title, fontsize=9)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=100, bbox_inches='tight')
    return path
