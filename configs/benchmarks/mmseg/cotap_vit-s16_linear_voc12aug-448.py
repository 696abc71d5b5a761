# Protocol: CoTAP (docs/probes.md, "Evaluation protocols by name").
# CoTAP ViT-S/16, linear probe (1x1 conv on the frozen 768-d features), Adam lr 3e-3 constant,
# on Pascal VOC 2012 trainaug / val.
# Spec method.md §6.1: 100k samples / 128 = 781 iterations,
# 8 GPUs x 16; image 336 -> label 448; val 448 -> 448.
# Backbone weights: --cfg-options model.backbone.init_cfg.checkpoint=PATH (docs/downstream.md).
# Protocol switch: replace the dataset base below by the commented standard-protocol one
# (labels at original resolution, mmseg resize/crop pipelines).
_base_ = [
    './_base_/models/cotap_vit-s16_linear.py',
    './_base_/datasets/voc12aug_cotap-448.py',
    # standard protocol: './_base_/datasets/voc12aug_mmseg.py'
    './_base_/schedules/adam_constant.py',
    './_base_/default_runtime.py',
]
steps = 781
model = dict(decode_head=dict(num_classes=21))
train_cfg = dict(max_iters=steps, val_interval=steps)  # evaluate the final model
