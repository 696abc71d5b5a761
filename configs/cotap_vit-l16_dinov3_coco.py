# CoTAP from DINOv3 ViT-L/16 (dinov3_vitl16): 1024-d, 24 layers, 16 heads, the DINOv3 parts of
# cotap_vit-s16_dinov3_coco.py. CoTAP released no ViT-L run: this keeps the ViT-B schedule and
# batch of cotap_vit-b16_dinov3_coco.py (8 GPUs x 16, global 128, 210k iterations); only the
# heads' input width (2D = 2048) changes.
#   python tools/model_converters/convert.py --src-format dinov3 \
#       dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth checkpoints/dinov3_vit-l16.pth
_base_ = './cotap_vit-b16_dinov3_coco.py'
embed_dims = 1024
model = dict(
    backbone=dict(arch='large', init_cfg=dict(checkpoint='checkpoints/dinov3_vit-l16.pth')),
    patch_head=dict(in_channels=2 * embed_dims),
    cls_head=dict(in_channels=2 * embed_dims))
