"""The synthetic scenes (:mod:`cotap_mm.datasets.synthetic`) as an mmsegmentation dataset.

Needs mmsegmentation: imported by :mod:`cotap_mm.segmentation`, never by ``import cotap_mm``.
"""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from cotap_mm.datasets.synthetic import CLASSES, PALETTE

__all__ = ['SyntheticScenesDataset']


@DATASETS.register_module()
class SyntheticScenesDataset(BaseSegDataset):
    """Labelled synthetic scenes in mmseg's layout, written by ``tools/make_synthetic_scenes.py``:
    ``data_root/img_dir/{train,val}/*.jpg`` and ``data_root/ann_dir/{train,val}/*.png`` with the
    class ids of :data:`cotap_mm.datasets.synthetic.CLASSES` (things first, then stuff; 255 is
    ignored).
    """
    METAINFO = dict(classes=tuple(CLASSES), palette=[list(c) for c in PALETTE])

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False,
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)
