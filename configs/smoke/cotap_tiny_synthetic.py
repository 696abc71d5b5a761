# `make smoke`: two iterations of the real CoTAP algorithm with tools/train.py, from random
# weights, on a few synthetic scenes (tools/make_synthetic_scenes.py) and their kNN files
# (tools/precompute_knn.py), all written under work_dirs/smoke/ by the Makefile. A check that the
# whole training path runs (data, kNN pairs, crops, all five losses, k-means, EMA, checkpoint), in
# seconds on a CPU: the demo's config (configs/demo/) shrunk further.
_base_ = ['../demo/cotap_vit-tiny_synthetic.py']

data_root = 'work_dirs/smoke/data/'
max_iters = 2

model = dict(
    backbone=dict(num_prototypes=8, init_cfg=None),
    patch_head=dict(num_prototypes=32, hidden_channels=64, bottleneck_channels=16),
    cls_head=dict(num_prototypes=32, hidden_channels=64, bottleneck_channels=16),
    bank=dict(capacity=8, num_insert=4, kmeans_iters=20),  # full at step 1, so k-means runs
    queue_sizes=(1024, 256),
    queue_inserts=(64, 8))

train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        coco=dict(dataset=dict(data_root=data_root + 'coco'), nns_file=data_root + 'nns/coco.npz',
                  num_neighbors=3),
        imagenet=dict(dataset=dict(data_root=data_root + 'imagenet'),
                      nns_file=data_root + 'nns/imagenet.npz', num_neighbors=3)))

param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters + 5, eta_min=5e-5, by_epoch=False, begin=0,
         end=max_iters),
    dict(type='CosineAnnealingParamScheduler', param_name='weight_decay', T_max=max_iters + 5,
         eta_min_ratio=10., by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=max_iters))
