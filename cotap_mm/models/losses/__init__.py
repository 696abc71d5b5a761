from .cls_code_loss import *  # noqa: F401,F403
from .continuous_ap_loss import *  # noqa: F401,F403
from .entropy_max_loss import *  # noqa: F401,F403
from .inner_patch_loss import *  # noqa: F401,F403
