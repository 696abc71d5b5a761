from .atomic_checkpoint_hook import *  # noqa: F401,F403
from .dense_probe_hook import *  # noqa: F401,F403
from .rank_state_hook import *  # noqa: F401,F403
from .teacher_ema_hook import *  # noqa: F401,F403
