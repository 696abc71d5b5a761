"""The MMLogger of a command line."""
from mmengine.logging import MMLogger

__all__ = ['tool_logger']


def tool_logger(name: str) -> MMLogger:
    """The INFO-level MMLogger ``name``, created on the first call: a second ``main()`` in one
    process (tests) must not pass arguments to ``get_instance`` again."""
    if MMLogger.check_instance_created(name):
        return MMLogger.get_instance(name)
    return MMLogger.get_instance(name, logger_name=name, log_level='INFO')
