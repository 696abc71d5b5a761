from .multicrop import *  # noqa: F401,F403
