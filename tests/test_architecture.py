"""The import rules of docs/architecture.md: every ``cotap_mm`` module's imports of the package
(module level and inside functions) stay within what its layer may import."""
import ast
import os
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LEAVES = {'cotap_mm.utils', 'cotap_mm.registry', 'cotap_mm.version'}
MODELS = {f'cotap_mm.models.{p}'
          for p in ('utils', 'losses', 'necks', 'backbones', 'heads', 'algorithms')}
# layer -> the layers it may import (besides itself); docs/architecture.md, "Layers"
ALLOWED = {
    'cotap_mm.utils': set(),
    'cotap_mm.registry': set(),
    'cotap_mm.version': set(),
    'cotap_mm.models.utils': LEAVES,
    'cotap_mm.models.losses': LEAVES | {'cotap_mm.models.utils'},
    'cotap_mm.models.necks': LEAVES | {'cotap_mm.models.utils'},
    'cotap_mm.models.backbones': LEAVES | {'cotap_mm.models.utils', 'cotap_mm.models.necks'},
    'cotap_mm.models.heads': LEAVES | {'cotap_mm.models.utils', 'cotap_mm.models.losses'},
    'cotap_mm.models.algorithms': LEAVES | MODELS,
    'cotap_mm.models': LEAVES | MODELS,
    'cotap_mm.datasets': LEAVES,
    'cotap_mm.converters': LEAVES | {'cotap_mm.models.backbones'},
    'cotap_mm.evaluation': LEAVES | MODELS | {'cotap_mm.datasets'},
    'cotap_mm.engine': LEAVES | MODELS | {'cotap_mm.datasets', 'cotap_mm.evaluation'},
    'cotap_mm.visualization': LEAVES,
    'cotap_mm.benchmarking': LEAVES | MODELS | {'cotap_mm.datasets', 'cotap_mm.evaluation'},
    'cotap_mm.segmentation': LEAVES | MODELS | {'cotap_mm.datasets', 'cotap_mm'},
    'cotap_mm': None,  # the package root registers everything
}


def _layer(module: str) -> str:
    parts = module.split('.')
    depth = 3 if parts[:2] == ['cotap_mm', 'models'] and len(parts) > 2 else 2
    return '.'.join(parts[:depth])


def _package_imports(path: str, module: str, is_package: bool):
    package = module if is_package else module.rsplit('.', 1)[0]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                names = ['.'.join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            if name == 'cotap_mm' or (name or '').startswith('cotap_mm.'):
                yield node.lineno, name
            elif (name or '').split('.')[0] == 'tools':
                yield node.lineno, name


def test_layering_rules():
    violations, modules = [], 0
    for folder, _, files in os.walk(osp.join(ROOT, 'cotap_mm')):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = osp.join(folder, name)
            module = osp.relpath(path, ROOT)[:-3].replace(os.sep, '.')
            is_package = module.endswith('.__init__')
            module = module[:-len('.__init__')] if is_package else module
            layer = _layer(module)
            assert layer in ALLOWED, f'{module}: layer {layer} is not in docs/architecture.md'
            modules += 1
            for lineno, imported in _package_imports(path, module, is_package):
                target = _layer(imported) if imported.startswith('cotap_mm.') else imported
                if target.split('.')[0] == 'tools':
                    violations.append(f'{module}:{lineno} imports {imported} (tools/)')
                elif (target != layer and ALLOWED[layer] is not None
                      and target not in ALLOWED[layer]):
                    violations.append(f'{module}:{lineno} ({layer}) imports {imported}')
    assert modules > 50
    assert not violations, 'imports against docs/architecture.md:\n' + '\n'.join(violations)


def test_the_rules_catch_a_violation(tmp_path):
    """A loss importing a head is reported (the checker itself works)."""
    path = tmp_path / 'bad.py'
    path.write_text('from cotap_mm.models.heads import CorrespondenceHead\n'
                    'def f():\n    from ..algorithms import CoTAP\n')
    found = list(_package_imports(str(path), 'cotap_mm.models.losses.bad', False))
    assert [name for _, name in found] == ['cotap_mm.models.heads', 'cotap_mm.models.algorithms']
    assert all(_layer(n) not in ALLOWED['cotap_mm.models.losses'] for _, n in found)
