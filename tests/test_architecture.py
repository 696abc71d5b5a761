"""The rules of docs/architecture.md: every ``cotap_mm`` module's imports of the package (module
level and inside functions) stay within what its layer may import; the package imports nothing of
the applications beside it (``tools/``, ``benchmarks/``), parses no command line, starts no
process and loads no file as a module; ``import cotap_mm`` loads no demo or command-line module."""
import ast
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
APPLICATIONS = ('tools', 'benchmarks')  # beside the package, never imported by it
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
    'cotap_mm.segmentation': LEAVES | MODELS | {'cotap_mm.datasets', 'cotap_mm'},
    'cotap_mm.apis': LEAVES | MODELS,  # the user API: the one loader and the image reader
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
            elif (name or '').split('.')[0] in APPLICATIONS:
                yield node.lineno, name


def _package_files():
    """``(path, module, is_package)`` of every module of the package."""
    for folder, _, files in os.walk(osp.join(ROOT, 'cotap_mm')):
        for name in sorted(files):
            if name.endswith('.py'):
                path = osp.join(folder, name)
                module = osp.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                is_package = module.endswith('.__init__')
                yield path, module[:-len('.__init__')] if is_package else module, is_package


def test_layering_rules():
    violations, modules = [], 0
    for path, module, is_package in _package_files():
        layer = _layer(module)
        assert layer in ALLOWED, f'{module}: layer {layer} is not in docs/architecture.md'
        modules += 1
        for lineno, imported in _package_imports(path, module, is_package):
            target = _layer(imported) if imported.startswith('cotap_mm.') else imported
            if target.split('.')[0] in APPLICATIONS:
                violations.append(f'{module}:{lineno} imports {imported} (an application)')
            elif (target != layer and ALLOWED[layer] is not None
                  and target not in ALLOWED[layer]):
                violations.append(f'{module}:{lineno} ({layer}) imports {imported}')
    assert modules > 50
    assert not violations, 'imports against docs/architecture.md:\n' + '\n'.join(violations)


def test_the_rules_catch_a_violation(tmp_path):
    """A loss importing a head and an application is reported, and so is a command line (the
    checkers themselves work)."""
    path = tmp_path / 'bad.py'
    path.write_text('from cotap_mm.models.heads import CorrespondenceHead\n'
                    'def f():\n    from ..algorithms import CoTAP\n'
                    '    from benchmarks.report import machine_info\n')
    found = list(_package_imports(str(path), 'cotap_mm.models.losses.bad', False))
    assert [name for _, name in found] == ['cotap_mm.models.heads', 'cotap_mm.models.algorithms',
                                           'benchmarks.report']
    assert all(_layer(n) not in ALLOWED['cotap_mm.models.losses'] for _, n in found)
    path.write_text('import argparse, sys\nfrom subprocess import run\n'
                    'p = argparse.ArgumentParser()\nargs = p.parse_args(sys.argv[1:])\n'
                    'from importlib.util import spec_from_file_location\n'
                    'ok = argparse.Namespace  # unpickling allow-lists may name it\n')
    assert sorted(line for line, _ in _application_code(str(path))) == [2, 3, 4, 4, 5]


# what only an application does: parse a command line, start a process, load a file as a module
_APPLICATION_NAMES = {'ArgumentParser', 'ArgumentTypeError', 'parse_args', 'add_argument',
                      'argv', 'spec_from_file_location'}


def _application_code(path: str):
    """``(line, what)`` of each command-line parsing, process start or file-as-module load."""
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or '']
            if any(alias.name in _APPLICATION_NAMES for alias in node.names):
                yield node.lineno, 'imports ' + ', '.join(a.name for a in node.names)
        else:
            name = getattr(node, 'attr', getattr(node, 'id', None))
            if isinstance(node, (ast.Attribute, ast.Name)) and name in _APPLICATION_NAMES:
                yield node.lineno, name
            continue
        if any(m.split('.')[0] == 'subprocess' for m in modules):
            yield node.lineno, 'imports ' + ', '.join(modules)


def test_the_package_is_a_library():
    """No command-line parsing, process start or file loaded as a module in the package."""
    found = [f'{osp.relpath(path, ROOT)}:{line}: {what}'
             for path, _, _ in _package_files() for line, what in _application_code(path)]
    assert not found, 'application code in cotap_mm:\n' + '\n'.join(found)


def test_import_loads_no_demo_or_command_line_module():
    """``import cotap_mm`` (a fresh interpreter) loads neither the synthetic scene generator nor
    any command-line or application module."""
    code = ('import sys, cotap_mm; print(sorted(m for m in sys.modules if m.split(".")[0] in '
            '("cotap_mm", "tools", "benchmarks") and ("synthetic" in m or "cli" in m or '
            'not m.startswith("cotap_mm"))))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '[]'
