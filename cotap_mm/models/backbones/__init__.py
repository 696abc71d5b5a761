from .cotap_vit import CoTAPVisionTransformer
from .pixel_patches import PixelPatches

__all__ = ['CoTAPVisionTransformer', 'PixelPatches']
