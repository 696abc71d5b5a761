# CoTAP from DINOv2 ViT-B/14 with 4 registers (dinov2_vitb14_reg4): the ViT-B heads and batch of
# cotap_vit-b16_coco.py with the 14-px sizes of cotap_vit-s14_dinov2-reg_coco.py.
#   python tools/model_converters/convert.py --src-format dinov2 \
#       dinov2_vitb14_reg4_pretrain.pth checkpoints/dinov2-reg_vit-b14.pth
_base_ = './cotap_vit-b16_coco.py'
model = dict(
    backbone=dict(
        patch_size=14,
        img_size=224,
        layer_scale_init_value=1e-5,
        num_register_tokens=4,
        init_cfg=dict(checkpoint='checkpoints/dinov2-reg_vit-b14.pth')),
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
