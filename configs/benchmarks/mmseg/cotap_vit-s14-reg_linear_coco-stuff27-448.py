# Protocol: CoTAP (docs/probes.md, "Evaluation protocols by name").
# The COCO-Stuff-27 linear probe of cotap_vit-s16_linear_coco-stuff27-448.py for a backbone
# post-trained from DINOv2 ViT-S/14 with registers (configs/cotap_vit-s14_dinov2-reg_coco.py): the
# CoTAP protocol's 336 / 448 sides are multiples of 14 (24 x 24 and 32 x 32 tokens).
_base_ = ['./cotap_vit-s16_linear_coco-stuff27-448.py']
pretrained = 'work_dirs/cotap_vit-s14_dinov2-reg_coco/backbone.pth'
model = dict(
    data_preprocessor=dict(size_divisor=14),
    backbone=dict(patch_size=14, layer_scale_init_value=1e-5, num_register_tokens=4,
                  init_cfg=dict(checkpoint=pretrained)))
