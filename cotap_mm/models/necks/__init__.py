from .object_aware_filter import *  # noqa: F401,F403
