"""A clear message for a config key that a component does not take: the
``TypeError: X.__init__() got an unexpected keyword argument 'k'`` of a typo, explained with the
component, where the config sets the key and the closest valid names."""
import difflib
import inspect
import re

__all__ = ['ConfigArgumentError', 'explain_unexpected_kwarg']

_UNEXPECTED_KWARG = re.compile(r"([\w.<>]+)\(\) got an unexpected keyword argument '(\w+)'")


class ConfigArgumentError(TypeError):
    """A config gives a registered component an argument it does not take (a typo)."""


def _find_callable(qualname, tb):
    """The class / function named ``qualname`` in the locals or globals of the frames of
    ``tb`` (innermost first): the caller that passed the bad keyword holds it."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    owner = qualname[:-len('.__init__')] if qualname.endswith('.__init__') else qualname
    for frame in reversed(frames):
        for scope in (frame.f_locals, frame.f_globals):
            for value in list(scope.values()):
                if (inspect.isclass(value) or inspect.isfunction(value)) and \
                        getattr(value, '__qualname__', None) == owner:
                    return value
    return None


def _config_paths(node, key, type_name, prefix=''):
    """Dotted config paths of ``key`` in every dict of ``node`` holding it, those whose
    ``type`` names ``type_name`` first."""
    exact, other = [], []
    if isinstance(node, dict):
        if key in node:
            t = node.get('type', None)
            t = t if isinstance(t, str) else getattr(t, '__name__', '')
            (exact if t.split('.')[-1] == type_name else other).append(f'{prefix}{key}')
        for k, v in node.items():
            e, o = _config_paths(v, key, type_name, f'{prefix}{k}.')
            exact += e
            other += o
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            e, o = _config_paths(v, key, type_name, f'{prefix}{i}.')
            exact += e
            other += o
    return exact, other


def explain_unexpected_kwarg(exc, cfg=None):
    """A clear message for ``TypeError: X.__init__() got an unexpected keyword argument 'k'``
    raised while building a component from ``cfg`` (a typo in a config key), or ``None`` when
    ``exc`` is another error.

    The message names the component (type and module), the bad key and where the config sets
    it, the closest valid argument names (difflib) and all valid ones.
    """
    match = _UNEXPECTED_KWARG.search(str(exc))
    if match is None:
        return None
    qualname, key = match.groups()
    owner = qualname[:-len('.__init__')] if qualname.endswith('.__init__') else qualname
    name = owner.split('.')[-1]
    obj = _find_callable(qualname, exc.__traceback__)
    where, valid = name, []
    if obj is not None:
        where = f'{name} ({obj.__module__})'
        try:
            params = inspect.signature(obj).parameters.values()
            valid = [p.name for p in params
                     if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != 'self']
        except (TypeError, ValueError):  # pragma: no cover (builtins without a signature)
            valid = []
    msg = f'Config error: {where} got an unknown argument {key!r}'
    if cfg is not None:
        exact, other = _config_paths(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg, key,
                                     name)
        paths = exact or other
        if paths:
            msg += f' (set at `{"`, `".join(paths)}`)'
    msg += '.'
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    if close:
        msg += f' Did you mean {" or ".join(repr(c) for c in close)}?'
    if valid:
        msg += f' {name} takes: {", ".join(valid)}.'
    msg += ' Fix the key in the config file or in --cfg-options.'
    return msg
