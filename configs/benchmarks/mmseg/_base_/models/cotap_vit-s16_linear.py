# CoTAP ViT-S/16 (frozen; DINO-initialised and CoTAP post-trained) + a linear 1x1-conv head on the
# 768-d (2D) output of the object-aware filter at stride 16 (docs/method.md §6.1).
#
# `pretrained` below: a checkpoint whose state dict holds `backbone.*` keys: the output of
#   python tools/model_converters/extract_backbone.py work_dirs/cotap/iter_240000.pth backbone.pth
# (the student, as CoTAP's evaluation), or the pretraining checkpoint itself (its `backbone.*`
# keys are the student). Override it on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=backbone.pth
# It is loaded by `mim train` (Runner init_weights); `mim test` takes the segmentation
# checkpoint instead, which contains the backbone as well.
pretrained = 'work_dirs/cotap_vit-s16_coco/backbone.pth'
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # ImageNet, RGB, 0-255
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    # training batches: images are already ft_res x ft_res in the CoTAP protocol; the standard
    # protocol's dataset configs set `size=crop_size` instead
    size_divisor=16)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='CoTAPVisionTransformer',
        arch='small',  # DINO ViT-S: 384-d, 12 layers (NOT mmpretrain's 768-d 'small')
        patch_size=16,
        with_oaf=True,  # the evaluated feature is concat[ViT, OAF]: 2D = 768 channels
        out_type='featmap',
        frozen_stages=12,  # all 12 layers and the OAF: a frozen-feature probe
        drop_path_rate=0.,
        # CoTAPPretrained: mmengine's Pretrained made strict (missing / unexpected /
        # mis-shaped keys raise, naming them and the converter to run); only `oaf.*` may be
        # missing (an image-level SSL backbone without the object-aware filter)
        init_cfg=dict(type='CoTAPPretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(
        type='FCNHead',  # num_convs=0 + concat_input=False: only conv_seg, a 1x1 conv with bias
        in_channels=768,
        channels=768,
        num_convs=0,
        concat_input=False,
        in_index=-1,
        dropout_ratio=0.,
        num_classes=27,  # set by each top-level config
        norm_cfg=None,
        align_corners=False,
        # CoTAP: torch CrossEntropyLoss(ignore_index=255), i.e. mean over non-ignored pixels
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
