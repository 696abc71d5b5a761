# The demo's CoTAP stage (`make demo`, tools/demo.py): the real algorithm and losses, shrunk to a
# small ViT (4 layers, 96-d, patch 8) on the synthetic scenes of tools/make_synthetic_scenes.py
# (96-px images, 64/32-px crops), continuing from the demo's image-level init (by default the
# supervised classifier of configs/demo/init-supervised_vit-tiny_synthetic.py). tools/demo.py
# sets the data folders, kNN files and init checkpoint with --cfg-options.
# Settings for a run of hundreds instead of 240k steps (docs/demo.md): the released photometric
# augmentation (colour is a nuisance in the scenes), teacher_kernel_sync=True (the teacher gets
# the k-means prototypes at once instead of through the EMA; released: False), a faster EMA and a
# higher learning rate than the released 3e-5, and a sharper patch Sinkhorn temperature (0.02;
# released 0.05): with 0.05 the patch codes flatten to near log K within a few hundred steps and
# the inner-patch loss teaches nothing (docs/demo.md, "Levers").
_base_ = ['../cotap_vit-s16_coco.py']

data_root = 'work_dirs/demo/data/'
demo_arch = dict(embed_dims=96, num_layers=4, num_heads=3, feedforward_channels=384)
two_d = 2 * demo_arch['embed_dims']
max_iters = 300

model = dict(
    backbone=dict(
        arch=dict(demo_arch, _delete_=True), patch_size=8, img_size=64, num_prototypes=32,
        # missing oaf.* keys are allowed: a DINO-like init has no object-aware filter
        init_cfg=dict(type='CoTAPPretrained', checkpoint='work_dirs/demo/init_backbone.pth',
                      prefix='backbone.', allow_missing=('oaf.', ))),
    patch_head=dict(in_channels=two_d, num_prototypes=128, hidden_channels=256,
                    bottleneck_channels=64),
    cls_head=dict(in_channels=two_d, num_prototypes=256, hidden_channels=256,
                  bottleneck_channels=64),
    # pool scales for an 8x8 patch grid (the released 7, 14 are for 14x14)
    correspondence_head=dict(pool_sizes=(4, 8), topk=5, num_neg_draws=5),
    bank=dict(capacity=256, num_insert=32),
    queue_sizes=(16384, 2048),
    queue_inserts=(512, 32),
    teacher_momentum=(0.99, 0.999),
    teacher_kernel_sync=True,
    sinkhorn_temperatures=(0.02, 0.07))

# one loader worker at the lowest CPU priority: it loads the next batch in the cores the step
# leaves idle instead of taking them from the step's threads (docs/training.md, "Loader workers on
# a small CPU machine"); the crops come from the item seeds, so they do not depend on it
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    worker_init_fn=dict(type='low_priority_worker_init_fn'),
    pin_memory=False,
    dataset=dict(
        coco=dict(
            dataset=dict(data_root=data_root + 'coco'),
            nns_file=data_root + 'nns/nns_coco.npz'),
        imagenet=dict(
            dataset=dict(data_root=data_root + 'imagenet'),
            nns_file=data_root + 'nns/nns_imagenet.npz'),
        view_pipeline=[
            dict(type='CoTAPMultiCrop', size_crops=(64, 32), nmb_crops=(2, 4),
                 global_scale=(0.25, 1.0), local_scale=(0.05, 0.25))
        ]))

optim_wrapper = dict(optimizer=dict(lr=5e-4))  # AmpOptimWrapper: fp32 on CPU
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters + 5, eta_min=5e-5, by_epoch=False, begin=0,
         end=max_iters),
    dict(type='CosineAnnealingParamScheduler', param_name='weight_decay', T_max=max_iters + 5,
         eta_min_ratio=10., by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
