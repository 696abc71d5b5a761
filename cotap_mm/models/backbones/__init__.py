from .cotap_vit import CoTAPVisionTransformer

__all__ = ['CoTAPVisionTransformer']
