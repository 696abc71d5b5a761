# CoTAP ViT-S/16 with the released per-GPU batch: 4 GPUs x 28 (global 112, as the 8 x 14 default).
#   tools/dist_train.sh configs/cotap_vit-s16_4xb28_coco.py 4
# The global batch, schedule and losses are the same as configs/cotap_vit-s16_coco.py; what the
# per-GPU batch changes is everything the released code computes per GPU: each CoTAP list has
# 150 x 28 = 4,200 entries (2,100 at 14 per GPU), the patch/CLS queues hold 65,536 / 8,192 rows
# per GPU (half of that on 8 GPUs), and the per-GPU prototype bank fills, and the k-means of the
# object prototypes runs, at step ~10 instead of ~19 (docs/training.md).
_base_ = './cotap_vit-s16_coco.py'
train_dataloader = dict(batch_size=28)
