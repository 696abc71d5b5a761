# Protocol: CoTAP (docs/probes.md, "Evaluation protocols by name").
# CoTAP ViT-S/16, linear probe (1x1 conv on the frozen 768-d features), Adam lr 3e-3 constant,
# on COCO-Stuff-27 (STEGO curated lists).
# Spec method.md §6.1: 100k samples / 256 = 390 iterations,
# 8 GPUs x 32; image 336 -> label 448; val 448 -> 448.
# Backbone weights: --cfg-options model.backbone.init_cfg.checkpoint=PATH (docs/downstream.md).
# Protocol switch: replace the dataset base below by the commented standard-protocol one
# (labels at original resolution, mmseg resize/crop pipelines).
_base_ = [
    './_base_/models/cotap_vit-s16_linear.py',
    './_base_/datasets/coco-stuff27_cotap.py',
    # standard protocol: './_base_/datasets/coco-stuff27_mmseg.py'
    './_base_/schedules/adam_constant.py',
    './_base_/default_runtime.py',
]
steps = 390
model = dict(decode_head=dict(num_classes=27))
train_cfg = dict(max_iters=steps, val_interval=steps)  # evaluate the final model
