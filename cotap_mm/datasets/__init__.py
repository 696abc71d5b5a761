from .image_list import *  # noqa: F401,F403
from .knn_pair_dataset import *  # noqa: F401,F403
from .transforms import *  # noqa: F401,F403
