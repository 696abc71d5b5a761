"""Synthetic "things and stuff" scenes for the CPU demo (no download, no model code).

Each scene is a ``size x size`` RGB image split into 1-3 background ("stuff") regions by smooth
random boundaries, with 1-4 textured objects ("things") painted over it, later objects occluding
earlier ones. Every class has its own shape (things) and texture, with per-instance jitter
(scale, rotation, aspect, texture period and phase). By default (``colour_mode='per_instance'``)
colour is a nuisance: every object and every stuff region gets a random colour from a range
shared by all classes, so the class is carried by shape, texture and context only. With
``colour_mode='per_class'`` every class has its own hue range instead (the scenes of generator
version 1). The per-pixel label map holds the class of the top-most surface at each pixel.

The module is pure numpy + OpenCV and deterministic: one scene depends only on the
``numpy.random.Generator`` passed to :func:`generate_scene`, and :func:`write_synthetic_dataset`
seeds one generator per image from ``(seed, split, index)``, so a file's content does not depend
on how many images the other splits hold, and the splits never share a stream.

It does not import any model code (:mod:`.scenes` draws a scene, :mod:`.depth` gives its depth,
:mod:`.files` writes the dataset folders): ``tools/make_synthetic_scenes.py`` only needs numpy
and cv2. Layout written on disk and class table: ``docs/synthetic.md``.
"""
from .files import (colorize_label, pretraining_scene_classes, render_preview, write_preview,
                    write_synthetic_dataset)
from .depth import DEPTH_RANGE, scene_depth
from .scenes import (CLASSES, COLOUR_MODES, GENERATOR_VERSION, IGNORE_INDEX, PALETTE,
                     STUFF_CLASSES, THING_CLASSES, generate_scene)

__all__ = [
    'CLASSES', 'PALETTE', 'THING_CLASSES', 'STUFF_CLASSES', 'IGNORE_INDEX', 'GENERATOR_VERSION',
    'COLOUR_MODES', 'DEPTH_RANGE', 'generate_scene', 'scene_depth', 'write_synthetic_dataset',
    'render_preview', 'write_preview', 'colorize_label', 'pretraining_scene_classes'
]
