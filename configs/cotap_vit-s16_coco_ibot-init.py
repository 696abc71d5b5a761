# CoTAP ViT-S/16 from the ibot release instead of DINO; everything else as cotap_vit-s16_coco.py.
_base_ = './cotap_vit-s16_coco.py'
model = dict(backbone=dict(init_cfg=dict(checkpoint='checkpoints/ibot_vit-s16.pth')))
