"""The CoTAP projection head: an MLP, an L2-normalised bottleneck and K unit-norm prototypes.

(``docs/method.md`` §3.1.) One class serves both heads of the method:

- head 0 ("patch", K = 512) on token maps, giving ``feat_0`` (B, 512, h, w);
- head 1 ("cls", K = 4096) on CLS embeddings, giving ``cls_1`` (B, 4096).

::

    z = MLP(x)                      Linear(C, 2048), GELU, Linear(2048, 2048), GELU,
                                    Linear(2048, 256, bias=False)
    z = z / max(|z|, 1e-12)
    out = weight_norm(Linear(256, K, bias=False))(z)      gain g fixed at 1, no gradient

so ``out[..., k] = <z, v_k / |v_k|>`` is the cosine between the embedding and prototype k, in
[-1, 1]. These raw scores are what the losses consume (Sinkhorn codes for the teacher, logits / T
for the student).

The prototype layer uses ``torch.nn.utils.parametrizations.weight_norm`` rather than the legacy
``nn.utils.weight_norm``: a legacy weight-normed module cannot be ``copy.deepcopy``'d, and the EMA
teacher is built by deep-copying the student (:class:`~cotap_mm.models.utils.CoTAPTeacherEMA`). Its state-dict
keys are ``prototypes.parametrizations.weight.original0`` (g, (K, 1)) and ``...original1`` (v).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.utils.parametrizations import weight_norm

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_positive_int

__all__ = ['CoTAPProjectionHead']


@MODELS.register_module()
class CoTAPProjectionHead(BaseModule):
    """MLP + L2 normalisation + weight-normalised prototypes (cosine scores).

    Args:
        in_channels (int): input width C (2D = 768 after the object-aware filter of ViT-S).
        num_prototypes (int): K, the number of prototypes (512 patch head, 4096 CLS head).
        hidden_channels (int): width of the hidden MLP layers. Defaults to 2048.
        bottleneck_channels (int): width of the normalised embedding. Defaults to 256.
        num_layers (int): number of MLP Linear layers, the last one being the bias-free projection
            to the bottleneck (3 in CoTAP; 1 gives a single bias-free Linear). Defaults to 3.
        init_cfg (dict, optional): mmengine init config. The head initialises itself in
            ``__init__`` (trunc-normal 0.02 for the MLP, bias 0), so none is needed.

    Input shapes -> output shapes:
        (B, C) -> (B, K); (B, N, C) tokens -> (B, N, K); (B, C, H, W) maps -> (B, K, H, W).
    """

    def __init__(self,
                 in_channels: int,
                 num_prototypes: int,
                 hidden_channels: int = 2048,
                 bottleneck_channels: int = 256,
                 num_layers: int = 3,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        for name, value in (('in_channels', in_channels), ('num_prototypes', num_prototypes),
                            ('hidden_channels', hidden_channels),
                            ('bottleneck_channels', bottleneck_channels),
                            ('num_layers', num_layers)):
            check_positive_int('CoTAPProjectionHead', name, value)
        self.in_channels = in_channels
        self.num_prototypes = num_prototypes
        self.bottleneck_channels = bottleneck_channels

        layers = []
        width = in_channels
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, hidden_channels), nn.GELU()]
            width = hidden_channels
        # The projection to the bottleneck has no bias: its output is normalised right after.
        layers.append(nn.Linear(width, bottleneck_channels, bias=False))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        # The prototypes keep PyTorch's default Linear init of v: the official model's
        # trunc-normal init only wrote into the derived weight, with no lasting effect (§3.1).
        self.prototypes = weight_norm(
            nn.Linear(bottleneck_channels, num_prototypes, bias=False), dim=0)
        gain = self.prototypes.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        # With g == 1 fixed, every prototype row is v_k / |v_k| and the outputs are cosines.
        gain.requires_grad_(False)

    def init_weights(self) -> None:
        """Keep the constructor's init unless an explicit ``init_cfg`` asks otherwise.

        The gain is reset to 1 afterwards in any case, since an init_cfg matching ``Linear`` would
        otherwise be free to overwrite it.
        """
        super().init_weights()
        with torch.no_grad():
            self.prototypes.parametrizations.weight.original0.fill_(1.0)

    def _scores(self, x: Tensor) -> Tensor:
        """(..., C) -> (..., K) cosine scores."""
        z = F.normalize(self.mlp(x), dim=-1, p=2, eps=1e-12)
        return self.prototypes(z)

    def forward(self, x: Tensor) -> Tensor:
        """Cosine scores to the K prototypes.

        Args:
            x: (B, C) embeddings, (B, N, C) tokens or (B, C, H, W) feature maps.

        Returns:
            (B, K), (B, N, K) or (B, K, H, W) respectively, values in [-1, 1].
        """
        if not isinstance(x, Tensor):
            raise TypeError(f'CoTAPProjectionHead: `x` must be a torch.Tensor, '
                            f'got {type(x).__name__}')
        if x.dim() not in (2, 3, 4):
            raise ValueError('CoTAPProjectionHead: `x` must be (B, C), (B, N, C) or (B, C, H, W), '
                             f'got shape {tuple(x.shape)}')
        channel_dim = 1 if x.dim() == 4 else -1
        if x.shape[channel_dim] != self.in_channels:
            raise ValueError(f'CoTAPProjectionHead: `x` has {x.shape[channel_dim]} channels in '
                             f'dim {channel_dim} but in_channels={self.in_channels} '
                             f'(shape {tuple(x.shape)})')
        if x.dim() == 4:
            # Channels-last for the Linear layers, then back to a (B, K, H, W) map.
            return self._scores(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self._scores(x)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, bottleneck_channels={self.bottleneck_channels}, '
                f'num_prototypes={self.num_prototypes}')
