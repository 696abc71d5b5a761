"""Converters of released and own checkpoints into ``CoTAPVisionTransformer`` checkpoints
(``tools/model_converters/`` are their command lines; docs/converters.md)."""
from cotap_mm.utils.checkpoint_layout import DEFAULT_WHICH, SRC_FORMATS, detect_layout
from cotap_mm.utils.checkpoint_loading import CheckpointConversionError, load_source
from .backbone_meta import format_summary
from .cotap_checkpoint import extract_backbone
from .dino_layout import convert_checkpoint, convert_state_dict

__all__ = ['SRC_FORMATS', 'DEFAULT_WHICH', 'CheckpointConversionError', 'load_source',
           'detect_layout', 'convert_state_dict', 'convert_checkpoint', 'extract_backbone',
           'format_summary']
