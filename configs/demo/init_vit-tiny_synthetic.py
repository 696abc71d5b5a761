# The demo's optional self-supervised init (`tools/demo.py --init selfdistill`): a short
# image-level self-distillation of the demo ViT from random weights. At the demo's budget it probes
# below random weights (docs/demo.md), so the default init is the supervised classifier of
# init-supervised_vit-tiny_synthetic.py. It is the CoTAP pipeline with only the
# DINO-style CLS code losses switched on (inner_cls, intra_cls), no object-aware filter and, like
# DINO, a final LayerNorm (which CoTAP drops, docs/method.md §2.1); the dense terms (CoTAP ranking loss,
# inner-patch codes, prototype entropy) are weighted 0.
_base_ = ['./cotap_vit-tiny_synthetic.py']
model = dict(
    backbone=dict(with_oaf=False, final_norm=True, init_cfg=None),
    patch_head=dict(in_channels={{_base_.demo_arch.embed_dims}}),
    cls_head=dict(in_channels={{_base_.demo_arch.embed_dims}}),
    loss_weights=dict(inner_patch=0., cotap=0., entropy=0., inner_cls=1., intra_cls=1.))
optim_wrapper = dict(optimizer=dict(lr=5e-4))
