"""DINOv2's linear segmentation head (its released mmseg ``BNHead``): a BatchNorm of the frozen
features, then the 1x1 classifier, as an mmseg decode head for the "DINOv2 linear" protocol
(docs/probes.md).

Needs mmsegmentation: imported by :mod:`cotap_mm.segmentation`, not by ``import cotap_mm``.
"""
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

__all__ = ['BNLinearHead']


@MODELS.register_module()
class BNLinearHead(BaseDecodeHead):
    """``conv_seg(BN(x))``: ``norm_cfg`` (default ``SyncBN``, as DINOv2; ``BN`` on one CPU
    process) over the ``in_channels`` of the selected input, then mmseg's ``cls_seg`` (dropout,
    1x1 conv with bias). ``channels`` must equal ``in_channels``: nothing is projected.

    Shapes:
        (B, C, H, W) -> (B, num_classes, H, W)
    """

    def __init__(self, norm_cfg=dict(type='SyncBN', requires_grad=True), **kwargs):
        super().__init__(norm_cfg=norm_cfg, **kwargs)
        if self.channels != self.in_channels:
            raise ValueError(f'BNLinearHead: channels ({self.channels}) must equal in_channels '
                             f'({self.in_channels}); the head only normalises and classifies')
        self.bn = build_norm_layer(norm_cfg, self.in_channels)[1]

    def forward(self, inputs):
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))
