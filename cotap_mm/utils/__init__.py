from .checkpoint_conversion import (CheckpointConversionError, convert_checkpoint,  # noqa: F401
                                    detect_layout, extract_backbone)
from .fileio import atomic_save  # noqa: F401
