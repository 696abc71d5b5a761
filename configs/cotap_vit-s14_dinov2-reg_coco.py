# CoTAP continued pretraining of DINOv2 ViT-S/14 with 4 registers (dinov2_vits14_reg4) on COCO +
# ImageNet with kNN pairs; everything else as cotap_vit-s16_coco.py (8 GPUs x 14, 240k iterations).
#   python tools/model_converters/convert.py --src-format dinov2 \
#       dinov2_vits14_reg4_pretrain.pth checkpoints/dinov2-reg_vit-s14.pth
#   tools/dist_train.sh configs/cotap_vit-s14_dinov2-reg_coco.py 8
# Sizes that fit the 14-px grid: global crops 224 (16 x 16 tokens), local crops 98 (7 x 7, the
# s16 configs' 96 at 6 x 6), CoTAP pooling over 8 x 8 and 16 x 16 regions (s16: 7 and 14), the
# inner patch loss pooling local crops to 7 x 7 bins (s16: 6). The release grid (37 x 37) is
# interpolated once to 16 x 16 when the weights load. The registers are attended to by every
# layer and dropped from every output (docs/converters.md, "DINOv2").
_base_ = './cotap_vit-s16_coco.py'
model = dict(
    backbone=dict(
        patch_size=14,
        img_size=224,
        layer_scale_init_value=1e-5,  # DINOv2's LayerScale (the weights replace the value)
        num_register_tokens=4,
        init_cfg=dict(checkpoint='checkpoints/dinov2-reg_vit-s14.pth')),
    correspondence_head=dict(pool_sizes=(8, 16)),
    inner_patch_loss=dict(output_size=7))
view_pipeline = [
    dict(
        type='CoTAPMultiCrop',
        size_crops=(224, 98),
        nmb_crops=(2, 4),
        global_scale=(0.25, 1.0),
        local_scale=(0.05, 0.1)),
]
train_dataloader = dict(dataset=dict(view_pipeline=view_pipeline))
