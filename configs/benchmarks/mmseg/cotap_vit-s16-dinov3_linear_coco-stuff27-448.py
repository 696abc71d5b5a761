# Protocol: CoTAP (docs/probes.md, "Evaluation protocols by name").
# The COCO-Stuff-27 linear probe of cotap_vit-s16_linear_coco-stuff27-448.py for a backbone
# post-trained from DINOv3 ViT-S/16 (configs/cotap_vit-s16_dinov3_coco.py): RoPE (no position
# embedding to resize: any input size), 4 storage tokens, LayerScale, LayerNorm eps 1e-5. RoPE
# coordinate rescaling is a training-time augmentation: off here (a frozen probe in eval mode).
_base_ = ['./cotap_vit-s16_linear_coco-stuff27-448.py']
pretrained = 'work_dirs/cotap_vit-s16_dinov3_coco/backbone.pth'
model = dict(
    backbone=dict(rope_base=100., norm_cfg=dict(type='LN', eps=1e-5), layer_scale_init_value=1e-5,
                  num_register_tokens=4, init_cfg=dict(checkpoint=pretrained)))
