# CoTAP ViT-B/8 from DINO: 8 GPUs x 8 (global 64), 210k iterations (docs/method.md §4.6). With patch 8 the
# global crops give 28 x 28 tokens.
_base_ = './cotap_vit-b16_coco.py'
model = dict(backbone=dict(patch_size=8, init_cfg=dict(checkpoint='checkpoints/dino_vit-b8.pth')))
train_dataloader = dict(batch_size=8)
