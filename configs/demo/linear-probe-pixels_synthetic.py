# The raw-pixel floor of the demo's dense probe: the same linear (1x1 conv) head, schedule, data
# and metric as configs/demo/linear-probe_synthetic.py, on the normalised pixels of each 8x8
# patch (PixelPatches: 3 * 8 * 8 = 192 channels on the 12x12 patch grid of a ViT/8, no
# parameters) instead of a backbone's features. Numbers: docs/synthetic.md.
#   mim train mmseg configs/demo/linear-probe-pixels_synthetic.py --work-dir work_dirs/probe_pixels
#   mim test mmseg configs/demo/linear-probe-pixels_synthetic.py \
#       --checkpoint work_dirs/probe_pixels/iter_300.pth
_base_ = ['./linear-probe_synthetic.py']

patch_size = 8
pixel_channels = 3 * patch_size**2

model = dict(
    backbone=dict(_delete_=True, type='PixelPatches', patch_size=patch_size),
    decode_head=dict(in_channels=pixel_channels, channels=pixel_channels))
