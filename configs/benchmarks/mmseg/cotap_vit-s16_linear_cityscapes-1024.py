# Protocol: CoTAP (docs/probes.md, "Evaluation protocols by name").
# CoTAP ViT-S/16, linear probe (1x1 conv on the frozen 768-d features), Adam lr 3e-3 constant,
# on Cityscapes fine (19 classes).
# Spec method.md §6.1: 100k samples / 64 = 1562 iterations,
# 8 GPUs x 8; image 896 -> label 896 (crop); val 1024x1024 -> original label.
# Backbone weights: --cfg-options model.backbone.init_cfg.checkpoint=PATH (docs/downstream.md).
# Protocol switch: replace the dataset base below by the commented standard-protocol one
# (labels at original resolution, mmseg resize/crop pipelines).
_base_ = [
    './_base_/models/cotap_vit-s16_linear.py',
    './_base_/datasets/cityscapes_cotap.py',
    # standard protocol: './_base_/datasets/cityscapes_mmseg.py'
    './_base_/schedules/adam_constant.py',
    './_base_/default_runtime.py',
]
steps = 1562
model = dict(decode_head=dict(num_classes=19))
train_cfg = dict(max_iters=steps, val_interval=steps)  # evaluate the final model
