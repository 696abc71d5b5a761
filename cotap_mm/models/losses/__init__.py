from .continuous_ap_loss import ContinuousAPLoss, continuous_ap_loss, select_impl

__all__ = ['ContinuousAPLoss', 'continuous_ap_loss', 'select_impl']
