"""Per-pixel depth of a synthetic scene (:mod:`.scenes`), for the linear depth probe's data: a
function of the scene's description, so it draws nothing random."""
import numpy as np

from .scenes import object_frame

__all__ = ['DEPTH_RANGE', 'scene_depth']

DEPTH_RANGE = (1.5, 8.0)  # metres: the ground at the bottom / top image edge


def scene_depth(info: dict, size: int) -> np.ndarray:
    """A per-pixel depth map (metres, float32 (size, size)) of a scene from its ``info``
    (:func:`generate_scene`), drawing nothing random: the same scene always has the same depth.

    The background is a ground plane receding upwards (``DEPTH_RANGE[0]`` at the bottom edge,
    ``DEPTH_RANGE[1]`` at the top); each object stands on the ground at its lowest point, in
    front of what it occludes (0.15 m in front of the nearest surface it covers), and bulges
    towards the camera by up to a quarter of its radius (a dome over its shape); nothing is
    nearer than 0.5 m."""
    near, far = DEPTH_RANGE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    depth = far - (far - near) * yy / size
    metres_per_px = (far + near) / 2 / size  # object sizes at a typical distance
    painted = np.zeros((size, size), dtype=bool)
    for o in info['objects']:
        _, _, r, mask = object_frame(o, xx, yy)
        if not mask.any():
            continue
        bottom = min(float(yy[mask].max()), size)
        base = far - (far - near) * bottom / size
        covered = mask & painted
        if covered.any():
            base = min(base, float(depth[covered].min()) - 0.15)
        dome = 0.25 * o['radius'] * metres_per_px * np.sqrt(np.clip(1 - r ** 2, 0, 1))
        depth[mask] = np.maximum(base - dome, 0.5)[mask]
        painted |= mask
    return depth.astype(np.float32)
