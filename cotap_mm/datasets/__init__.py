from .image_list import *  # noqa: F401,F403
from .knn_file import *  # noqa: F401,F403
from .knn_pair_dataset import *  # noqa: F401,F403
from .samplers import *  # noqa: F401,F403
from .transforms import *  # noqa: F401,F403
from . import synthetic  # noqa: F401  (numpy/cv2 scene generator; docs/synthetic.md)
