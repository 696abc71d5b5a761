from .resumable_loop import *  # noqa: F401,F403
