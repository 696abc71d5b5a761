# CoTAP from DINOv3 ViT-S+/16 (dinov3_vits16plus): ViT-S/16 with a SwiGLU FFN (DINOv3's ffn_ratio
# 6, of which SwiGLU keeps 2/3: 1536 hidden); the sizes, heads and batch (8 GPUs x 14, global
# 112) of cotap_vit-s16_dinov3_coco.py.
#   python tools/model_converters/convert.py --src-format dinov3 \
#       dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth checkpoints/dinov3_vit-s16plus.pth
_base_ = './cotap_vit-s16_dinov3_coco.py'
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=384, num_layers=12, num_heads=6,
                  feedforward_channels=2304),
        layer_cfgs=dict(ffn_type='swiglu_fused'),
        init_cfg=dict(checkpoint='checkpoints/dinov3_vit-s16plus.pth')))
