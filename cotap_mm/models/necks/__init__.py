from .object_aware_filter import *  # noqa: F401,F403
from .prototype_bank import *  # noqa: F401,F403
