# CoTAP from DINOv3 ViT-B/16 (dinov3_vitb16): the ViT-B heads, batch (8 GPUs x 16, global 128)
# and 210k iterations of cotap_vit-b16_coco.py with the DINOv3 parts of
# cotap_vit-s16_dinov3_coco.py (RoPE, storage tokens, LayerScale, LN eps 1e-5; patch 16, so the
# crop, pooling and inner-bin sizes of the DINO configs; RoPE rescaling off, as explained there).
#   python tools/model_converters/convert.py --src-format dinov3 \
#       dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth checkpoints/dinov3_vit-b16.pth
_base_ = './cotap_vit-b16_coco.py'
model = dict(
    backbone=dict(
        rope_base=100.,
        rope_rescale_coords=None,
        norm_cfg=dict(type='LN', eps=1e-5),
        layer_scale_init_value=1e-5,
        num_register_tokens=4,
        init_cfg=dict(checkpoint='checkpoints/dinov3_vit-b16.pth')))
