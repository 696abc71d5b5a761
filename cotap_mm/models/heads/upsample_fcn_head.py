"""CoTAP's FCN segmentation head (docs/method.md §6.1), as an mmseg decode head.

Needs mmsegmentation: imported by :mod:`cotap_mm.segmentation`, not by ``import cotap_mm``
(``cotap_mm.models.heads`` does not import this module).
"""
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

__all__ = ['UpsampleBlock', 'UpsampleFCNHead']


class UpsampleBlock(nn.Module):
    """Residual bottleneck, 1x1 projection, then bilinear x2 upsampling.

    ``x + ReLU(BN(conv3x3(ReLU(BN(conv1x1(x))))))`` (bottleneck width ``in/2``), then a 1x1 conv
    (with bias) to ``out_channels`` and ``F.interpolate(scale_factor=2, mode='bilinear')``.

    Args:
        in_channels (int): C_in.
        out_channels (int): C_out.
        conv_cfg, norm_cfg, act_cfg (dict | None): For the two normalised convolutions.
        align_corners (bool): Of the upsampling. Defaults to False.

    Shapes:
        (B, C_in, H, W) -> (B, C_out, 2H, 2W)
    """

    def __init__(self, in_channels, out_channels, conv_cfg=None, norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='ReLU'), align_corners=False):
        super().__init__()
        if in_channels < 2:
            raise ValueError(f'UpsampleBlock: in_channels must be >= 2, got {in_channels}')
        mid = in_channels // 2
        self.reduce = ConvModule(in_channels, mid, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                 act_cfg=act_cfg)
        self.expand = ConvModule(mid, in_channels, 3, padding=1, conv_cfg=conv_cfg,
                                 norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.proj = nn.Conv2d(in_channels, out_channels, 1)
        self.align_corners = align_corners

    def forward(self, x):
        x = x + self.expand(self.reduce(x))
        x = self.proj(x)
        return F.interpolate(x, scale_factor=2, mode='bilinear',
                             align_corners=self.align_corners)


@MODELS.register_module()
class UpsampleFCNHead(BaseDecodeHead):
    """CoTAP FCN head: ``len(widths)`` :class:`UpsampleBlock` s, then dropout and a 1x1 conv.

    docs/method.md §6.1: three blocks with widths ``2D -> 512 -> 384 -> 256`` (2D = 768 for ViT-S with the
    object-aware filter), each block upsampling x2 (x8 overall, stride 16 -> stride 2), then
    Dropout(0.1) and ``conv_seg`` (1x1, 256 -> num_classes). CoTAP uses SyncBN: use
    ``norm_cfg=dict(type='SyncBN')`` on GPUs (mmengine turns it into BN when not distributed) and
    ``dict(type='BN')`` for multi-process CPU runs (SyncBN has no CPU kernel).

    Differences from mmseg's ``BaseDecodeHead`` defaults: ``channels`` is the last width (do not
    pass it), and the dropout before ``conv_seg`` is element-wise ``nn.Dropout`` as released
    (docs/method.md §6.1), not ``nn.Dropout2d``.

    Args:
        in_channels (int): Channels of the selected backbone map (``in_index``).
        widths (Sequence[int]): Output widths of the blocks. Defaults to (512, 384, 256).
        norm_cfg (dict): Defaults to ``dict(type='SyncBN', requires_grad=True)``.
        dropout_ratio (float): Defaults to 0.1.
        **kwargs: Other :class:`BaseDecodeHead` arguments (``num_classes``, ``in_index``,
            ``align_corners``, ``loss_decode``, ...).

    Shapes:
        inputs[in_index]: (B, in_channels, h, w) -> logits (B, num_classes, 2^n h, 2^n w),
        n = len(widths).
    """

    def __init__(self, in_channels, widths=(512, 384, 256),
                 norm_cfg=dict(type='SyncBN', requires_grad=True), dropout_ratio=0.1, **kwargs):
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(f'UpsampleFCNHead: widths must be positive ints, got {widths}')
        if 'channels' in kwargs and kwargs['channels'] != widths[-1]:
            raise ValueError(f"UpsampleFCNHead: channels={kwargs['channels']} differs from the "
                             f'last width {widths[-1]}; set widths instead of channels')
        kwargs.pop('channels', None)
        if kwargs.get('input_transform') is not None:
            raise ValueError('UpsampleFCNHead takes a single map (input_transform=None)')
        super().__init__(in_channels, widths[-1], norm_cfg=norm_cfg,
                         dropout_ratio=dropout_ratio, **kwargs)
        self.widths = widths
        blocks, c_in = [], in_channels
        for width in widths:
            blocks.append(UpsampleBlock(c_in, width, conv_cfg=self.conv_cfg,
                                        norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                                        align_corners=self.align_corners))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout_ratio) if dropout_ratio > 0 else None

    def forward(self, inputs):
        """tuple of (B, C, h, w) maps -> logits (B, num_classes, 2^n h, 2^n w)."""
        x = self._transform_inputs(inputs)
        return self.cls_seg(self.blocks(x))
