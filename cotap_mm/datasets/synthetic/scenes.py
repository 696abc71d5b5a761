"""Scene generator of the synthetic "things and stuff" data (see the package docstring)."""
import colorsys
from typing import List, Optional, Tuple

import cv2
import numpy as np

__all__ = [
    'CLASSES', 'PALETTE', 'THING_CLASSES', 'STUFF_CLASSES', 'IGNORE_INDEX', 'GENERATOR_VERSION',
    'COLOUR_MODES', 'generate_scene', 'check_colour_mode'
]

GENERATOR_VERSION = 'cotap_mm.synthetic/2'
IGNORE_INDEX = 255
JPEG_QUALITY = 95

#: ``'per_instance'`` (default): a random colour per object / stuff region, the same range for
#: every class. ``'per_class'``: each class its own hue range (generator version 1's scenes).
COLOUR_MODES = ('per_instance', 'per_class')
# 'per_instance' ranges, shared by all classes: hue (degrees), saturation and value of the main
# colour. The texture's second colour follows one rule for every class: the main hue + 20 deg,
# saturation x0.9, lighter (value x1.5) if the main colour is dark (value < 0.7), else darker
# (value x0.45), so that neither brightness nor contrast sign gives the class either.
INSTANCE_HUE = (0., 360.)
INSTANCE_SAT = (0.45, 0.85)
INSTANCE_VALUE = (0.5, 0.9)
INSTANCE_SECOND_HUE_OFFSET = 20.
INSTANCE_SECOND_VALUE = dict(below=0.7, lighter=1.5, darker=0.45)

# --- class table -------------------------------------------------------------------------------
# Things: (name, shape, texture, hue in degrees, saturation, value, (hue offset, value factor) of
# the second texture colour). The colours are the display colours of the classes (PALETTE) and
# the colour distribution of the 'per_class' mode, where neighbouring hues overlap after jitter
# (e.g. disc/star/triangle: red/orange/yellow; square/ellipse: blue/cyan; and square vs the
# water stuff), so colour is a strong but imperfect cue.
_THINGS = (
    ('disc', 'disc', 'stripes', 0., 0.75, 0.85, (0., 0.45)),
    ('square', 'square', 'checker', 215., 0.70, 0.80, (20., 1.25)),
    ('triangle', 'triangle', 'dots', 52., 0.80, 0.90, (-25., 0.45)),
    ('star', 'star', 'noise', 28., 0.85, 0.90, (10., 0.55)),
    ('ring', 'ring', 'gradient', 285., 0.60, 0.80, (0., 0.35)),
    ('cross', 'cross', 'crosshatch', 130., 0.65, 0.75, (0., 1.35)),
    ('ellipse', 'ellipse', 'rings', 185., 0.70, 0.80, (-15., 0.45)),
    ('crescent', 'crescent', 'zigzag', 325., 0.65, 0.85, (30., 0.5)),
)
# Stuff: (name, texture, hue, sat, value, (hue offset, value factor) of the second colour).
_STUFF = (
    ('grass', 'grass', 100., 0.65, 0.50, (-15., 1.45)),
    ('water', 'water', 205., 0.70, 0.50, (-10., 1.6)),
    ('brick', 'brick', 10., 0.65, 0.60, (25., 1.4)),
    ('sand', 'sand', 40., 0.35, 0.80, (-5., 0.8)),
)
THING_CLASSES = tuple(t[0] for t in _THINGS)
STUFF_CLASSES = tuple(s[0] for s in _STUFF)
#: Label ``i`` is ``CLASSES[i]``: the 8 things, then the 4 stuff classes.
CLASSES = THING_CLASSES + STUFF_CLASSES
NUM_THINGS = len(THING_CLASSES)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV (degrees, [0, 1], [0, 1]) -> float32 RGB in [0, 1], shape (3,)."""
    return np.array(colorsys.hsv_to_rgb((h % 360.) / 360., float(np.clip(s, 0, 1)),
                                        float(np.clip(v, 0, 1))), dtype=np.float32)


#: Display colour of each class (RGB, uint8), for label pictures: the class's nominal colour
#: (its mean colour in the 'per_class' mode; in the default mode, colour is random per instance).
PALETTE = [[int(round(255 * c)) for c in _hsv(*t[3:6])] for t in _THINGS] + \
          [[int(round(255 * c)) for c in _hsv(*s[2:5])] for s in _STUFF]

# --- helpers -----------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, cells: Tuple[int, int]) -> np.ndarray:
    """Smooth random field in [0, 1]: (size, size) float32, a bicubic upsampling of a
    ``cells = (rows, cols)`` uniform grid (fewer cells = smoother)."""
    grid = rng.random(cells).astype(np.float32)
    field = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    lo, hi = field.min(), field.max()
    return (field - lo) / max(hi - lo, 1e-6)


def _mix(c1: np.ndarray, c2: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend (H, W, 3) of colours c1 (t=0) and c2 (t=1); t: (H, W) in [0, 1]."""
    t = t[..., None]
    return c1 * (1. - t) + c2 * t


def _jittered_colours(rng: np.random.Generator, h: float, s: float, v: float,
                      second: Tuple[float, float], hue_jitter: float) -> Tuple[np.ndarray, ...]:
    """'per_class': the two colours of one instance: the class colour with hue/sat/value jitter,
    and the texture's second colour (hue offset, value factor) derived from the jittered one."""
    h = h + rng.uniform(-hue_jitter, hue_jitter)
    s = s * rng.uniform(0.75, 1.15)
    v = v * rng.uniform(0.8, 1.15)
    return _hsv(h, s, v), _hsv(h + second[0], s * 0.9, v * second[1])


def _random_colours(rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
    """'per_instance': the two colours of one instance, independent of its class: a main colour
    drawn from the shared ranges and the second one by the shared rule. Three draws, as
    :func:`_jittered_colours`, so that the rest of the scene is the same in both modes."""
    h = rng.uniform(*INSTANCE_HUE)
    s = rng.uniform(*INSTANCE_SAT)
    v = rng.uniform(*INSTANCE_VALUE)
    rule = INSTANCE_SECOND_VALUE
    factor = rule['lighter'] if v < rule['below'] else rule['darker']
    return _hsv(h, s, v), _hsv(h + INSTANCE_SECOND_HUE_OFFSET, s * 0.9, v * factor)


def _instance_colours(rng: np.random.Generator, colour_mode: str, entry: tuple,
                      hue_jitter: float) -> Tuple[np.ndarray, ...]:
    """The two texture colours of one object or stuff region; ``entry`` ends with the class's
    (hue, sat, value, second) of the class table."""
    if colour_mode == 'per_class':
        return _jittered_colours(rng, *entry[-4:], hue_jitter=hue_jitter)
    return _random_colours(rng)


# --- stuff -------------------------------------------------------------------------------------


def _stuff_texture(rng: np.random.Generator, kind: str, size: int, yy: np.ndarray,
                   xx: np.ndarray) -> np.ndarray:
    """Texture field t (size, size) in [0, 1] of one stuff class, in image coordinates."""
    if kind == 'grass':
        # Blades: smooth along y (few rows), sharp along x; plus fine speckle.
        blades = _smooth_noise(rng, size, (max(2, size // 16), max(4, size // 2)))
        speck = rng.random((size, size)).astype(np.float32)
        return np.clip(0.75 * blades + 0.25 * speck, 0, 1)
    if kind == 'water':
        a = rng.uniform(0, np.pi)
        period = size * rng.uniform(0.10, 0.16)
        along = xx * np.cos(a) + yy * np.sin(a)
        across = -xx * np.sin(a) + yy * np.cos(a)
        wobble = 0.25 * period * np.sin(2 * np.pi * across / (size * rng.uniform(0.3, 0.5)))
        w = 0.5 + 0.5 * np.sin(2 * np.pi * (along + wobble) / period + rng.uniform(0, 2 * np.pi))
        return (w ** 2).astype(np.float32)  # narrow bright crests
    if kind == 'brick':
        bh = size * rng.uniform(0.09, 0.12)
        bw = bh * rng.uniform(1.8, 2.4)
        y = yy + rng.uniform(0, bh)
        row = np.floor(y / bh)
        x = xx + rng.uniform(0, bw) + (row % 2) * bw / 2
        col = np.floor(x / bw)
        mortar = ((y % bh) < 1.3) | ((x % bw) < 1.3)
        # Per-brick shade from a small random table, indexed by the brick's (row, col).
        table = rng.uniform(0.0, 0.3, size=(64, 64)).astype(np.float32)
        shade = table[row.astype(np.int64) % 64, col.astype(np.int64) % 64]
        return np.where(mortar, 1.0, shade).astype(np.float32)
    if kind == 'sand':
        speck = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (3, 3), 0.7)
        a = rng.uniform(0, np.pi)
        ripple = 0.5 + 0.5 * np.sin(
            2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / (size * rng.uniform(0.05, 0.08)))
        return np.clip(0.6 * speck + 0.4 * ripple, 0, 1).astype(np.float32)
    raise ValueError(f'unknown stuff texture {kind!r}')


def _stuff_layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """Region map (size, size) int: which of the K (1-3) stuff regions owns each pixel.

    The argmax of K smooth random fields (3x3 control points) gives large regions with smooth,
    random boundaries."""
    k = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    if k == 1:
        return np.zeros((size, size), dtype=np.int64)
    fields = np.stack([_smooth_noise(rng, size, (3, 3)) for _ in range(k)])
    return fields.argmax(0)


# --- things ------------------------------------------------------------------------------------


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inside-test of a unit-size shape in local coordinates (u, v) (object radius = 1)."""
    if shape in ('disc', 'ellipse'):  # the ellipse comes from its aspect ratio
        return r <= 1.0
    if shape == 'square':
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    # Triangle and star reach a little beyond radius 1 so that their areas are closer to the
    # others' (a triangle inscribed in the unit circle covers only 41% of the disc).
    if shape == 'triangle':  # equilateral, circumradius 1.25: three half-planes
        m = np.ones_like(u, dtype=bool)
        for a in (np.pi / 6, 5 * np.pi / 6, 3 * np.pi / 2):
            m &= (np.cos(a) * u + np.sin(a) * v) <= 0.625
        return m
    if shape == 'star':  # 5 points: radius oscillates between 0.5 and 1.15 with the angle
        theta = np.arctan2(v, u)
        f = (theta * 5 / (2 * np.pi)) % 1.0
        return r <= 0.5 + 0.65 * np.abs(2 * f - 1)
    if shape == 'ring':
        return (r <= 1.0) & (r >= 0.55)
    if shape == 'cross':
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0))
    if shape == 'crescent':
        return (r <= 1.0) & ((u - 0.5) ** 2 + v ** 2 > 0.8 ** 2)
    raise ValueError(f'unknown shape {shape!r}')


def object_frame(obj: dict, xx: np.ndarray, yy: np.ndarray):
    """An object's local coordinates ``u``, ``v`` (radius 1 along its axes), ``r`` and its
    inside mask, at pixel centres ``xx``, ``yy``; ``obj`` as in :func:`generate_scene`'s info."""
    cx, cy = obj['center']
    ca, sa = np.cos(obj['angle']), np.sin(obj['angle'])
    dx, dy = xx - cx, yy - cy
    ax = obj['radius'] * np.sqrt(obj['aspect'])
    ay = obj['radius'] / np.sqrt(obj['aspect'])
    u = (dx * ca + dy * sa) / ax
    v = (-dx * sa + dy * ca) / ay
    r = np.sqrt(u ** 2 + v ** 2)
    return u, v, r, _shape_mask(_THINGS[obj['cls']][1], u, v, r)


def _thing_texture(rng: np.random.Generator, kind: str, u: np.ndarray, v: np.ndarray,
                   r: np.ndarray, size: int) -> np.ndarray:
    """Texture field t in [0, 1] in the object's frame (it rotates and scales with the object)."""
    p = rng.uniform(0.8, 1.2)  # period jitter (relative to the class's nominal period)
    ph = rng.uniform(0, 1)
    if kind == 'stripes':
        a = np.deg2rad(45 + rng.uniform(-12, 12))
        return 0.5 + 0.5 * np.sin(2 * np.pi * ((u * np.cos(a) + v * np.sin(a)) / (0.45 * p) + ph))
    if kind == 'checker':
        q = 0.5 * p
        return ((np.floor(u / q + ph) + np.floor(v / q + ph)) % 2).astype(np.float32)
    if kind == 'dots':
        q = 0.42 * p
        du, dv = (u / q + ph) % 1 - 0.5, (v / q + ph) % 1 - 0.5
        return (du ** 2 + dv ** 2 < 0.28 ** 2).astype(np.float32)
    if kind == 'noise':
        n = _smooth_noise(rng, size, (max(2, size // 6), max(2, size // 6)))
        return (n > 0.5).astype(np.float32) * 0.8 + 0.2 * n
    if kind == 'gradient':
        a = rng.uniform(0, 2 * np.pi)
        return np.clip(0.5 + 0.5 * (u * np.cos(a) + v * np.sin(a)), 0, 1)
    if kind == 'crosshatch':
        q = 0.45 * p
        return ((np.abs(np.sin(np.pi * (u / q + ph))) < 0.35) |
                (np.abs(np.sin(np.pi * (v / q + ph))) < 0.35)).astype(np.float32)
    if kind == 'rings':
        return 0.5 + 0.5 * np.sin(2 * np.pi * (r / (0.35 * p) + ph))
    if kind == 'zigzag':
        q = 0.4 * p
        tri = np.abs(((u / q + ph) % 1) * 2 - 1)  # triangle wave along u
        return ((v / q + 0.6 * tri) % 1 < 0.5).astype(np.float32)
    raise ValueError(f'unknown thing texture {kind!r}')


def _draw_objects_params(rng: np.random.Generator, size: int, mode: str,
                         main_class: Optional[int]) -> List[dict]:
    """Classes, centres, radii, angles and aspects of the objects, in painting order."""
    objs = []
    if mode == 'scene':
        n = int(rng.integers(1, 5))
        for _ in range(n):
            objs.append(dict(cls=int(rng.integers(NUM_THINGS)),
                             radius=size * rng.uniform(0.13, 0.30),
                             center=rng.uniform(0.1, 0.9, size=2) * size))
    elif mode == 'object_centric':
        # 0-2 small distractors first, then the large main object on top near the centre.
        cls = int(rng.integers(NUM_THINGS)) if main_class is None else int(main_class)
        for _ in range(int(rng.integers(0, 3))):
            objs.append(dict(cls=int(rng.integers(NUM_THINGS)),
                             radius=size * rng.uniform(0.08, 0.14),
                             center=rng.uniform(0.1, 0.9, size=2) * size))
        objs.append(dict(cls=cls, radius=size * rng.uniform(0.28, 0.40),
                         center=rng.uniform(0.38, 0.62, size=2) * size))
    else:
        raise ValueError(f"generate_scene: mode={mode!r}; use 'scene' or 'object_centric'")
    for o in objs:
        shape = _THINGS[o['cls']][1]
        o['angle'] = float(rng.uniform(0, 2 * np.pi))
        # Width/height ratio: the ellipse is elongated, the disc nearly round, others mildly.
        o['aspect'] = float(rng.uniform(0.42, 0.6) if shape == 'ellipse' else
                            rng.uniform(0.9, 1.1) if shape == 'disc' else rng.uniform(0.8, 1.25))
        o['radius'] = float(o['radius'])
        o['center'] = [float(c) for c in o['center']]
    return objs


# --- public API --------------------------------------------------------------------------------


def generate_scene(rng: np.random.Generator,
                   size: int = 96,
                   mode: str = 'scene',
                   main_class: Optional[int] = None,
                   colour_mode: str = 'per_instance') -> Tuple[np.ndarray, np.ndarray, dict]:
    """Render one synthetic scene.

    Args:
        rng (numpy.random.Generator): The only source of randomness (same state, same scene).
        size (int): Image side in pixels (>= 16). Defaults to 96.
        mode (str): ``'scene'`` (1-4 objects anywhere, COCO-like) or ``'object_centric'``
            (one large object near the centre on top of 0-2 small ones, ImageNet-like).
        main_class (int, optional): Thing class of the large object in ``'object_centric'``
            mode (``0 <= main_class < 8``); random if ``None``.
        colour_mode (str): ``'per_instance'`` (a random colour per object and per stuff
            region, from ranges shared by all classes: colour does not give the class) or
            ``'per_class'`` (each class its own hue range, as generator version 1).
            Defaults to ``'per_instance'``.

    Returns:
        tuple:
        - img (np.ndarray): uint8 (size, size, 3), **RGB**.
        - label (np.ndarray): uint8 (size, size), class index into :data:`CLASSES` of the
          top-most surface; every pixel is labelled (no :data:`IGNORE_INDEX`).
        - info (dict): JSON-serialisable: ``objects`` (list of dicts with ``cls``, ``name``,
          ``center`` [x, y], ``radius``, ``angle``, ``aspect``, ``visible_px``), ``stuff``
          (stuff class indices present), ``dominant`` (thing class with the most visible
          pixels), ``dominant_name`` and ``colour_mode``.
    """
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f'generate_scene: size={size!r}; it must be an int >= 16')
    if main_class is not None and not 0 <= int(main_class) < NUM_THINGS:
        raise ValueError(f'generate_scene: main_class={main_class!r}; it must be a thing class '
                         f'index in [0, {NUM_THINGS})')
    check_colour_mode('generate_scene', colour_mode)
    size = int(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5

    # Background: 1-3 stuff regions, distinct stuff classes.
    regions = _stuff_layout(rng, size)
    k = int(regions.max()) + 1
    stuff_ids = rng.permutation(len(_STUFF))[:k]
    img = np.zeros((size, size, 3), dtype=np.float32)
    label = np.zeros((size, size), dtype=np.uint8)
    for j, sid in enumerate(stuff_ids):
        kind = _STUFF[sid][1]
        c1, c2 = _instance_colours(rng, colour_mode, _STUFF[sid], hue_jitter=12.)
        tex = _stuff_texture(rng, kind, size, yy, xx)  # drawn even if the region is empty:
        m = regions == j  # keeps the random stream independent of the region areas
        img[m] = _mix(c1, c2, tex)[m]
        label[m] = NUM_THINGS + sid

    # Things, painted in order (later ones occlude earlier ones).
    objs = _draw_objects_params(rng, size, mode, main_class)
    for o in objs:
        name, _, texture = _THINGS[o['cls']][:3]
        c1, c2 = _instance_colours(rng, colour_mode, _THINGS[o['cls']], hue_jitter=18.)
        u, v_, r, mask = object_frame(o, xx, yy)
        tex = _thing_texture(rng, texture, u, v_, r, size)
        # Soft directional shading so objects look like surfaces, not flat stickers.
        la = rng.uniform(0, 2 * np.pi)
        shade = 1.0 + 0.12 * np.clip(u * np.cos(la) + v_ * np.sin(la), -1, 1)
        img[mask] = (_mix(c1, c2, tex) * shade[..., None])[mask]
        label[mask] = o['cls']
        o['name'] = name

    # Photometric: slight blur (soft edges), global gain, sensor noise.
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 0.012, size=img.shape)
    img = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)

    counts = np.bincount(label.ravel(), minlength=len(CLASSES))
    for o in objs:
        o['visible_px'] = int(counts[o['cls']])  # per class: same-class objects share pixels
    thing_counts = counts[:NUM_THINGS]
    dominant = int(thing_counts.argmax()) if thing_counts.max() > 0 else None
    info = dict(
        colour_mode=colour_mode,
        objects=objs,
        stuff=[int(c) for c in np.unique(label) if c >= NUM_THINGS],
        dominant=dominant,
        dominant_name=None if dominant is None else CLASSES[dominant])
    return img, label, info


def check_colour_mode(caller: str, colour_mode: str) -> None:
    if colour_mode not in COLOUR_MODES:
        raise ValueError(f'{caller}: colour_mode={colour_mode!r}; use one of {COLOUR_MODES}')
