"""ObjectAwareFilter: equality with a per-position, per-head loop reference; shapes; no kernel grad."""
import pytest
import torch
from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer

from cotap_mm.models.necks import ObjectAwareFilter
from cotap_mm.registry import MODELS

D, HEADS, FFN, M = 16, 2, 32, 5


def _layer(seed=0):
    torch.manual_seed(seed)
    layer = TransformerEncoderLayer(D, HEADS, FFN, qkv_bias=True,
                                    norm_cfg=dict(type='LN', eps=1e-6))
    with torch.no_grad():  # non-trivial LayerNorm affine params and biases
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer


def _randomise_norms(oaf):
    with torch.no_grad():
        for n in (oaf.norm_in, oaf.norm_out_patch, oaf.norm_out_cls):
            n.weight.add_(0.1 * torch.randn_like(n.weight))
            n.bias.add_(0.1 * torch.randn_like(n.bias))


def _reference(oaf, layer, x, hw):
    """Straightforward loops over heads, positions and template offsets (docs/method.md §2.2)."""
    B, T, _ = x.shape
    H, W = hw
    dh = D // HEADS
    Wqkv, bqkv = layer.attn.qkv.weight, layer.attn.qkv.bias
    K = oaf.kernel.detach()
    Kn = oaf.norm_in(K.permute(0, 2, 3, 1))  # (M, 3, 3, D)
    kk = Kn @ Wqkv[D:2 * D].T + bqkv[D:2 * D]
    vv = Kn @ Wqkv[2 * D:].T + bqkv[2 * D:]

    def finish(xt, out):
        xf = xt + layer.attn.proj(out)
        return xf + layer.ffn.layers[1](layer.ffn.layers[0](layer.ln2(xf)))

    # patch branch
    xp = x[:, 1:]
    q = layer.ln1(xp) @ Wqkv[:D].T + bqkv[:D]  # (B, N, D)
    q = q.reshape(B, H, W, D)
    out = torch.zeros(B, H, W, D)
    for b in range(B):
        for h in range(HEADS):
            sl = slice(h * dh, (h + 1) * dh)
            for y in range(H):
                for xx in range(W):
                    logits = torch.zeros(M)
                    for m in range(M):
                        s = 0.
                        for a in (-1, 0, 1):
                            for c in (-1, 0, 1):
                                if 0 <= y + a < H and 0 <= xx + c < W:
                                    s = s + q[b, y + a, xx + c, sl] @ kk[m, a + 1, c + 1, sl]
                        logits[m] = s
                    p = (logits / M**0.5).softmax(0)
                    vbar = vv[:, :, :, sl].mean(dim=(1, 2))  # (M, dh)
                    out[b, y, xx, sl] = p @ vbar
    xf = finish(xp, out.reshape(B, H * W, D))
    patch = oaf.norm_out_patch(torch.cat([xp, xf], -1))
    # CLS branch
    xc = x[:, :1]
    qc = layer.ln1(xc) @ Wqkv[:D].T + bqkv[:D]
    outc = torch.zeros(B, 1, D)
    for b in range(B):
        for h in range(HEADS):
            sl = slice(h * dh, (h + 1) * dh)
            kbar = kk[:, :, :, sl].mean(dim=(1, 2))
            vbar = vv[:, :, :, sl].mean(dim=(1, 2))
            p = (kbar @ qc[b, 0, sl] / M**0.5).softmax(0)
            outc[b, 0, sl] = p @ vbar
    cls = oaf.norm_out_cls(torch.cat([xc, finish(xc, outc)], -1))
    return torch.cat([cls, patch], 1)


@pytest.mark.parametrize('hw', [(3, 3), (2, 4), (4, 1)])
@pytest.mark.parametrize('mode', ['borrow_init', 'borrow_call', 'standalone'])
def test_matches_loop_reference(hw, mode):
    layer = _layer()
    if mode == 'borrow_init':
        oaf = ObjectAwareFilter(layer=layer, num_prototypes=M)
        call_layer = None
    elif mode == 'borrow_call':
        oaf = ObjectAwareFilter(embed_dims=D, num_prototypes=M)
        call_layer = layer
    else:
        oaf = ObjectAwareFilter(embed_dims=D, num_heads=HEADS, feedforward_channels=FFN,
                                num_prototypes=M)
        oaf.layer.load_state_dict(layer.state_dict())
        call_layer = None
    _randomise_norms(oaf)
    x = torch.randn(2, 1 + hw[0] * hw[1], D)
    with torch.no_grad():
        out = oaf(x, hw=hw, layer=call_layer)
        ref = _reference(oaf, layer, x, hw)
    assert out.shape == (2, 1 + hw[0] * hw[1], 2 * D)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_borrowed_layer_not_in_state_dict_and_standalone_is():
    oaf = ObjectAwareFilter(layer=_layer(), num_prototypes=M)
    keys = set(oaf.state_dict())
    assert keys == {'kernel', 'norm_in.weight', 'norm_in.bias', 'norm_out_patch.weight',
                    'norm_out_patch.bias', 'norm_out_cls.weight', 'norm_out_cls.bias'}
    assert oaf.kernel.shape == (M, D, 3, 3)
    standalone = ObjectAwareFilter(embed_dims=D, num_heads=HEADS, feedforward_channels=FFN)
    assert 'layer.attn.qkv.weight' in standalone.state_dict()
    assert standalone.kernel.shape == (64, D, 3, 3)


def test_kernel_init_truncated_normal():
    oaf = ObjectAwareFilter(embed_dims=64, num_prototypes=64)
    k = oaf.kernel.detach()
    assert k.abs().max() <= 2.0
    assert 0.8 < k.std() < 0.95  # std of N(0,1) truncated at +-2 is ~0.88


def test_no_gradient_to_kernel_but_to_norms_and_layer():
    layer = _layer()
    oaf = ObjectAwareFilter(layer=layer, num_prototypes=M)
    x = torch.randn(2, 1 + 6, D, requires_grad=True)
    oaf(x, hw=(2, 3)).square().sum().backward()
    assert oaf.kernel.grad is None
    assert oaf.norm_in.weight.grad is not None and oaf.norm_out_cls.weight.grad is not None
    assert layer.attn.qkv.weight.grad is not None and x.grad is not None


def test_featmap_and_tuple_inputs_and_build():
    oaf = MODELS.build(dict(type='ObjectAwareFilter', embed_dims=D, num_heads=HEADS,
                            feedforward_channels=FFN, num_prototypes=M))
    assert isinstance(oaf, ObjectAwareFilter)
    fmap = torch.randn(2, D, 3, 5)
    out = oaf(fmap)
    assert out.shape == (2, 2 * D, 3, 5)
    tokens = torch.cat([torch.randn(2, 1, D), fmap.flatten(2).transpose(1, 2)], 1)
    # the patch branch does not depend on the CLS token
    torch.testing.assert_close(oaf(tokens, hw=(3, 5))[:, 1:], out.flatten(2).transpose(1, 2))
    (tup, ) = oaf((torch.randn(1, D, 2, 2), fmap))
    torch.testing.assert_close(tup, out)
    # square grid inferred
    assert oaf(torch.randn(1, 1 + 16, D)).shape == (1, 17, 2 * D)


def test_bad_inputs():
    oaf = ObjectAwareFilter(embed_dims=D, num_heads=HEADS, feedforward_channels=FFN)
    with pytest.raises(ValueError, match='hw'):
        oaf(torch.randn(1, 1 + 6, D))
    with pytest.raises(ValueError, match='6 tokens do not fill the 2 x 2 grid'):
        oaf(torch.randn(1, 1 + 6, D), hw=(2, 2))
    with pytest.raises(ValueError, match='no transformer layer'):
        ObjectAwareFilter(embed_dims=D)(torch.randn(1, 5, D))


def test_bad_args():
    with pytest.raises(ValueError, match='embed_dims'):
        ObjectAwareFilter()
    with pytest.raises(ValueError, match='`num_prototypes` must be > 0'):
        ObjectAwareFilter(embed_dims=D, num_prototypes=0)
    with pytest.raises(ValueError, match='`out_type`'):
        ObjectAwareFilter(embed_dims=D, out_type='featmap')
    with pytest.raises(TypeError, match='TransformerEncoderLayer'):
        ObjectAwareFilter(layer=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match='layer= sets embed_dims=16.*embed_dims=17'):
        ObjectAwareFilter(layer=_layer(), embed_dims=D + 1)
    with pytest.raises(ValueError, match='needs num_heads dividing embed_dims=16'):
        ObjectAwareFilter(embed_dims=D, feedforward_channels=FFN)
