# The GPU-scale demo's CoTAP stage (`python tools/demo.py --preset gpu`): the CoTAP stage of
# ../cotap_vit-tiny_synthetic.py on the 6-layer ViT-S/8 of the GPU init, 128/64-px crops of the
# 160-px scenes (a 16x16 global patch grid), 64 OAF prototypes, batch 32, fp16 autocast.
_base_ = ['../cotap_vit-tiny_synthetic.py']

demo_arch = dict(embed_dims=384, num_layers=6, num_heads=6, feedforward_channels=1536)
two_d = 2 * demo_arch['embed_dims']
max_iters = 1000

model = dict(
    backbone=dict(arch=dict(demo_arch, _delete_=True), img_size=128, num_prototypes=64),
    patch_head=dict(in_channels=two_d, hidden_channels=1024, bottleneck_channels=128),
    cls_head=dict(in_channels=two_d, hidden_channels=1024, bottleneck_channels=128),
    correspondence_head=dict(pool_sizes=(8, 16)))  # for a 16x16 grid, as 7, 14 for 14x14
train_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=True, pin_memory=True,
    dataset=dict(view_pipeline=[
        dict(type='CoTAPMultiCrop', size_crops=(128, 64), nmb_crops=(2, 4),
             global_scale=(0.25, 1.0), local_scale=(0.05, 0.25))
    ]))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters + 5, eta_min=5e-5, by_epoch=False, begin=0,
         end=max_iters),
    dict(type='CosineAnnealingParamScheduler', param_name='weight_decay', T_max=max_iters + 5,
         eta_min_ratio=10., by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
