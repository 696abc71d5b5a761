from .optim_wrapper_constructor import NoDecayOneDimOptimWrapperConstructor

__all__ = ['NoDecayOneDimOptimWrapperConstructor']
