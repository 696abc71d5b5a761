"""Converters of released and own checkpoints into ``CoTAPVisionTransformer`` checkpoints, one
key table and one ``convert()`` per source layout (``tools/model_converters/`` are their command
lines; docs/converters.md)."""
from cotap_mm.utils.checkpoint_layout import DEFAULT_WHICH, SRC_FORMATS, detect_layout
from cotap_mm.utils.checkpoint_loading import CheckpointConversionError
from .cotap import extract_backbone
from .released import CONVERTERS, convert_checkpoint, convert_state_dict
from .hf_export import to_hf
from .timm_export import TIMM_NAMES, timm_model_kwargs, timm_model_name, to_timm_state_dict

__all__ = ['SRC_FORMATS', 'DEFAULT_WHICH', 'CheckpointConversionError', 'detect_layout',
           'CONVERTERS', 'convert_state_dict', 'convert_checkpoint', 'extract_backbone',
           'TIMM_NAMES', 'timm_model_kwargs', 'timm_model_name', 'to_timm_state_dict', 'to_hf']
