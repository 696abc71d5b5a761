# CoTAP continued pretraining of DINOv3 ViT-S/16 (dinov3_vits16, LVD-1689M) on COCO + ImageNet
# with kNN pairs; everything else as cotap_vit-s16_coco.py: 8 GPUs x 14 images (global batch
# 112), 240k iterations.
#   python tools/model_converters/convert.py --src-format dinov3 \
#       dinov3_vits16_pretrain_lvd1689m-08c60483.pth checkpoints/dinov3_vit-s16.pth
#   tools/dist_train.sh configs/cotap_vit-s16_dinov3_coco.py 8
# Patch 16 as DINO ViT-S/16, so the sizes of cotap_vit-s16_coco.py hold as they are: global
# crops 224 (14 x 14 tokens), local crops 96 (6 x 6), CoTAP pooling over 7 x 7 and 14 x 14
# regions, inner-patch bins 6 x 6. DINOv3's parts: RoPE (base 100) instead of pos_embed, 4
# storage tokens (attended to by every layer, dropped from every output), LayerScale, LayerNorm
# eps 1e-5, masked k bias (docs/converters.md, "DINOv3").
# rope_rescale_coords stays off: DINOv3 rescales the RoPE coordinates of its student only (its
# teacher runs in eval mode), while CoTAP's EMA teacher is a train-mode copy of the student, so
# the switch would also jitter the teacher's targets (foreground mask, codes, correspondences).
_base_ = './cotap_vit-s16_coco.py'
model = dict(
    backbone=dict(
        rope_base=100.,
        rope_rescale_coords=None,
        norm_cfg=dict(type='LN', eps=1e-5),
        layer_scale_init_value=1e-5,  # the weights replace the value
        num_register_tokens=4,  # DINOv3's storage tokens
        init_cfg=dict(checkpoint='checkpoints/dinov3_vit-s16.pth')))
