from .cotap import *  # noqa: F401,F403
from .dino_baseline import *  # noqa: F401,F403
