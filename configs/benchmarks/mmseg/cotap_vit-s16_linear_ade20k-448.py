# Protocol: CoTAP (docs/probes.md, "Evaluation protocols by name").
# CoTAP ViT-S/16, linear probe (1x1 conv on the frozen 768-d features), Adam lr 3e-3 constant,
# on ADE20K (150 classes).
# Spec method.md §6.1: 100k samples / 128 = 781 iterations,
# 8 GPUs x 16; image 336 -> label 448; val 448 -> 448.
# Backbone weights: --cfg-options model.backbone.init_cfg.checkpoint=PATH (docs/downstream.md).
# Protocol switch: replace the dataset base below by the commented standard-protocol one
# (labels at original resolution, mmseg resize/crop pipelines).
_base_ = [
    './_base_/models/cotap_vit-s16_linear.py',
    './_base_/datasets/ade20k_cotap.py',
    # standard protocol: './_base_/datasets/ade20k_mmseg.py'
    './_base_/schedules/adam_constant.py',
    './_base_/default_runtime.py',
]
steps = 781
model = dict(decode_head=dict(num_classes=150))
train_cfg = dict(max_iters=steps, val_interval=steps)  # evaluate the final model
