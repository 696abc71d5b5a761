# CoTAP continued pretraining of DINO ViT-S/16 on COCO + ImageNet with kNN pairs: 8 GPUs x 14
# images (global batch 112), 240k iterations (docs/method.md §4.6).
#   tools/dist_train.sh configs/cotap_vit-s16_coco.py 8
_base_ = [
    '_base_/models/cotap_vit-s16.py',
    '_base_/datasets/coco_imagenet_knn.py',
    '_base_/schedules/cotap_240k.py',
    '_base_/default_runtime.py',
]
# DINO ViT-S/16 teacher weights converted to mmpretrain keys (see docs/data.md)
model = dict(backbone=dict(init_cfg=dict(checkpoint='checkpoints/dino_vit-s16.pth')))
