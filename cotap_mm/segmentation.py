"""mmsegmentation side of cotap_mm: import it (``custom_imports=dict(imports=['cotap_mm',
'cotap_mm.segmentation'])``) to register, in mmseg's registries:

- ``COCOStuff27Dataset`` (``DATASETS``), the 27-class COCO-Stuff of IIC/STEGO, and
  ``SyntheticScenesDataset``, the demo's synthetic scenes;
- ``SegLabelResize`` and ``SegRandomResizedCrop`` (``TRANSFORMS``), CoTAP's label protocol and
  training crop (docs/method.md §6.1);
- ``UpsampleFCNHead`` (``MODELS``), CoTAP's FCN head.

These modules import ``mmseg.models`` / ``mmseg.datasets`` (which need full mmcv with compiled
ops), so ``import cotap_mm`` does not import them; pretraining-only installs never need mmseg.
The backbone ``CoTAPVisionTransformer`` is registered in mmseg's ``MODELS`` by ``import
cotap_mm`` already.
"""
import cotap_mm  # noqa: F401  (compat patches, backbone registration)
from cotap_mm.datasets.coco_stuff27 import COCOStuff27Dataset
from cotap_mm.datasets.synthetic_seg import SyntheticScenesDataset
from cotap_mm.datasets.transforms.seg_label_resize import SegLabelResize, SegRandomResizedCrop
from cotap_mm.models.heads.bn_linear_head import BNLinearHead
from cotap_mm.models.heads.linear_depth_head import LinearDepthHead
from cotap_mm.models.heads.upsample_fcn_head import UpsampleFCNHead

__all__ = [
    'COCOStuff27Dataset', 'SyntheticScenesDataset', 'SegLabelResize', 'SegRandomResizedCrop',
    'UpsampleFCNHead', 'LinearDepthHead', 'BNLinearHead'
]
