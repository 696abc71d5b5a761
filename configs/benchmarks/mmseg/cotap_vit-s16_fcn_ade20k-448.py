# Protocol: CoTAP (docs/probes.md, "Evaluation protocols by name").
# CoTAP ViT-S/16, FCN head (3 UpsampleBlocks, x8), Adam lr 3e-3 cosine to 1e-4,
# on ADE20K (150 classes).
# Spec method.md §6.1: 400k samples / 128 = 3125 iterations,
# 8 GPUs x 16; image 336 -> label 448; val 448 -> 448.
# Backbone weights: --cfg-options model.backbone.init_cfg.checkpoint=PATH (docs/downstream.md).
# Protocol switch: replace the dataset base below by the commented standard-protocol one
# (labels at original resolution, mmseg resize/crop pipelines).
_base_ = [
    './_base_/models/cotap_vit-s16_fcn.py',
    './_base_/datasets/ade20k_cotap.py',
    # standard protocol: './_base_/datasets/ade20k_mmseg.py'
    './_base_/schedules/adam_cosine.py',
    './_base_/default_runtime.py',
]
steps = 3125
model = dict(decode_head=dict(num_classes=150))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=steps + 5, eta_min=1e-4, by_epoch=False, begin=0,
         end=steps)
]
train_cfg = dict(max_iters=steps, val_interval=steps)  # evaluate the final model
