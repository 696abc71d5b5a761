# The raw-pixel floor of the GPU-scale demo's probe: ../linear-probe-pixels_synthetic.py's
# PixelPatches head with the data and schedule of ./linear-probe_vit-s8_synthetic.py.
_base_ = ['./linear-probe_vit-s8_synthetic.py']

patch_size = 8
pixel_channels = 3 * patch_size**2

model = dict(
    backbone=dict(_delete_=True, type='PixelPatches', patch_size=patch_size),
    decode_head=dict(in_channels=pixel_channels, channels=pixel_channels))
