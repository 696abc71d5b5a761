from .image_list import *  # noqa: F401,F403
from .knn_pairs import *  # noqa: F401,F403
from .samplers import *  # noqa: F401,F403
from .transforms import *  # noqa: F401,F403
from .workers import *  # noqa: F401,F403
