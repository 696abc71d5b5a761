from .teacher_ema_hook import *  # noqa: F401,F403
