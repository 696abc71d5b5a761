"""Hook that keeps a self-supervised algorithm's EMA teacher in step with the student."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from cotap_mm.registry import HOOKS

__all__ = ['TeacherEMAHook']


@HOOKS.register_module()
class TeacherEMAHook(Hook):
    """Copy the student into the teacher before training, then EMA-update it after each step.

    The model must provide ``update_teacher()`` (see :class:`cotap_mm.models.CoTAP`). Running the
    update after the optimiser step follows the released step order (docs/method.md §4.2, step 12). On a
    fresh run the first call copies the initialised (e.g. pretrained) student; a resumed run
    restores the teacher and its step counter from the checkpoint and does not copy again.
    """
    priority = 'NORMAL'

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        model = self._model(runner)
        if int(model.teacher.steps) == 0:
            model.update_teacher()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._model(runner).update_teacher()
