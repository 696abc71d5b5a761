"""A linear depth probe on frozen features, as an mmseg decode head for ``DepthEstimator``: the
DINOv2 linear protocol's head (docs/downstream.md, "Linear depth probe").

Needs mmsegmentation: imported by :mod:`cotap_mm.segmentation`, not by ``import cotap_mm``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

__all__ = ['LinearDepthHead', 'bins_to_depth']


def bins_to_depth(logits: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """(B, K, H, W) bin logits -> (B, 1, H, W) depth: the expectation over K bins spaced
    uniformly in [min_depth, max_depth] under the "linear" normalisation
    ``p = (ReLU(logits) + 0.1) / sum(ReLU(logits) + 0.1)``."""
    weights = F.relu(logits) + 0.1
    probs = weights / weights.sum(dim=1, keepdim=True)
    bins = torch.linspace(min_depth, max_depth, logits.shape[1], device=logits.device,
                          dtype=logits.dtype)
    return torch.einsum('bkhw,k->bhw', probs, bins).unsqueeze(1)


@MODELS.register_module()
class LinearDepthHead(BaseDecodeHead):
    """Depth from one 1x1 convolution of the backbone's last feature map.

    The map (B, C, h, w) is upsampled bilinearly by ``upsample`` (4 in DINOv2's protocol), a 1x1
    conv gives ``num_bins`` logits per position, and the depth is their bin expectation
    (:func:`bins_to_depth`: uniform bins in ``[min_depth, max_depth]``, "linear" normalisation).
    Training compares it, resized bilinearly to the label size, with the label through
    ``loss_decode`` (pixels with no depth, 0, are ignored by mmseg's ``SiLogLoss``); inference
    clamps it to ``[min_depth, max_depth]``.

    Args:
        in_channels (int): C of the last feature map (2D with the object-aware filter).
        num_bins (int): Defaults to 256.
        min_depth, max_depth (float): Bin range in metres. Defaults to 0.001 and 10 (NYU).
        upsample (int): Upsampling of the feature map before the conv. Defaults to 4.
        loss_decode (dict): Defaults to ``dict(type='SiLogLoss')``.
        align_corners (bool): Of every bilinear resize. Defaults to False.
        init_cfg (dict): Defaults to a truncated normal (std 0.02) for the conv.
    """

    num_classes = 1
    out_channels = 1
    input_transform = None

    def __init__(self,
                 in_channels: int,
                 num_bins: int = 256,
                 min_depth: float = 1e-3,
                 max_depth: float = 10.,
                 upsample: int = 4,
                 loss_decode: dict = dict(type='SiLogLoss'),
                 align_corners: bool = False,
                 init_cfg=dict(type='TruncNormal', std=0.02, layer='Conv2d')):
        # BaseDecodeHead's own __init__ builds a segmentation classifier: skip it (as mmseg's
        # VPDDepthHead does) and set what its methods read
        super(BaseDecodeHead, self).__init__(init_cfg=init_cfg)
        if not 0 < min_depth < max_depth:
            raise ValueError(f'LinearDepthHead: need 0 < min_depth < max_depth, got '
                             f'{min_depth}, {max_depth}')
        if num_bins < 2 or upsample < 1:
            raise ValueError(f'LinearDepthHead: num_bins must be >= 2 and upsample >= 1, got '
                             f'{num_bins}, {upsample}')
        self.in_channels, self.in_index = in_channels, -1
        self.num_bins, self.upsample = num_bins, upsample
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.align_corners = align_corners
        self.conv_depth = nn.Conv2d(in_channels, num_bins, kernel_size=1)
        self.loss_decode = MODELS.build(loss_decode)

    def forward(self, inputs):
        x = inputs[-1]  # (B, C, h, w)
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode='bilinear',
                              align_corners=self.align_corners)
        return bins_to_depth(self.conv_depth(x), self.min_depth, self.max_depth)

    def loss_by_feat(self, pred_depth_map, batch_data_samples) -> dict:
        gt = torch.stack([s.gt_depth_map.data for s in batch_data_samples])  # (B, 1, H, W)
        pred = F.interpolate(pred_depth_map, size=gt.shape[2:], mode='bilinear',
                             align_corners=self.align_corners)
        return {self.loss_decode.loss_name: self.loss_decode(pred, gt)}

    def predict_by_feat(self, pred_depth_map, batch_img_metas):
        return super().predict_by_feat(pred_depth_map, batch_img_metas).clamp(
            self.min_depth, self.max_depth)
