# CoTAP ViT-S/16 (frozen) + CoTAP's FCN head: 3 UpsampleBlocks 768 -> 512 -> 384 -> 256 (x8
# upsampling), Dropout(0.1), 1x1 conv (docs/method.md §6.1). Backbone and data preprocessor as in
# cotap_vit-s16_linear.py.
_base_ = ['./cotap_vit-s16_linear.py']
model = dict(
    decode_head=dict(
        _delete_=True,
        type='UpsampleFCNHead',
        in_channels=768,
        widths=(512, 384, 256),
        in_index=-1,
        dropout_ratio=0.1,
        num_classes=27,  # set by each top-level config
        # SyncBN on GPUs (BN when not distributed); model.decode_head.norm_cfg.type=BN for CPU DDP
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         avg_non_ignore=True)))
