# Protocol "NeCo linear" (docs/probes.md, "Evaluation protocols by name") on COCO-Stuff-15: the
# 15 stuff super-classes (things ignored), trained on a random 10 % of train2017 and evaluated
# on every val2017 image, on 100 x 100 masks. Everything else as
# protocol-neco_vit-s16_linear_voc12aug-100.py. Labels and the 10 % list:
#   python tools/dataset_converters/coco_stuff27.py data/cocostuff --classes 15 --all-images \
#       --sample train2017=0.1
# (NeCo draws its 10 % from an unordered folder listing with Python's random: the subset itself
# cannot be reproduced, only its size and kind.)
_base_ = [
    './protocol-neco_vit-s16_linear_voc12aug-100.py',
]
model = dict(decode_head=dict(num_classes=15))
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='COCOStuff15Dataset',
        data_root='data/cocostuff',
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations15/train2017'),
        ann_file='annotations15/train2017.txt',
        pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    batch_size=4,
    dataset=dict(
        _delete_=True,
        type='COCOStuff15Dataset',
        data_root='data/cocostuff',
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations15/val2017'),
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
