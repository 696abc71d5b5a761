from .correspondence_head import *  # noqa: F401,F403
from .projection_head import *  # noqa: F401,F403
