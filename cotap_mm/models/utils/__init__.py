from .data_preprocessor import *  # noqa: F401,F403
from .feature_queue import *  # noqa: F401,F403
from .foreground_mask import *  # noqa: F401,F403
from .gaussian_blur import *  # noqa: F401,F403
from .kmeans import *  # noqa: F401,F403
from .prototype_bank import *  # noqa: F401,F403
from .sinkhorn import *  # noqa: F401,F403
from .teacher_ema import *  # noqa: F401,F403
