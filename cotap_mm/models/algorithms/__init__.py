from .cotap import *  # noqa: F401,F403
