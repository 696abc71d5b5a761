# CoTAP from DINOv2 ViT-S/14 without registers (dinov2_vits14); as cotap_vit-s14_dinov2-reg_coco.py.
#   python tools/model_converters/convert.py --src-format dinov2 \
#       dinov2_vits14_pretrain.pth checkpoints/dinov2_vit-s14.pth
_base_ = './cotap_vit-s14_dinov2-reg_coco.py'
model = dict(
    backbone=dict(num_register_tokens=0,
                  init_cfg=dict(checkpoint='checkpoints/dinov2_vit-s14.pth')))
