"""Packaging of cotap_mm, the OpenMMLab plugin for CoTAP dense self-supervised post-training.

Use ``bash tools/setup_env.sh`` (or ``make setup``) for the pinned environment; ``pip install -e .``
alone installs only the plugin and expects the OpenMMLab stack (with full mmcv) to be present.
"""
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    scope = {}
    with open(osp.join(HERE, 'cotap_mm', 'version.py'), encoding='utf-8') as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(name):
    """Requirement lines of ``requirements/<name>.txt`` without comments."""
    lines = []
    with open(osp.join(HERE, 'requirements', f'{name}.txt'), encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                lines.append(line)
    return lines


with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='cotap_mm',
    version=read_version(),
    description='CoTAP (semantic concentration for dense self-supervised ViT post-training) '
    'as an OpenMMLab plugin for mmpretrain and mmsegmentation',
    long_description=long_description,
    long_description_content_type='text/markdown',
    author='cotap_mm contributors',
    license='Apache-2.0',
    python_requires='>=3.8',
    # the library only: tools/ and benchmarks/ are the checkout's applications beside it
    packages=find_packages(include=['cotap_mm', 'cotap_mm.*']),
    include_package_data=True,
    # full mmcv is deliberately not listed: pip cannot build it against new torch without the
    # C++20 patch (tools/setup_env.sh), and GPU users install it with `mim install mmcv==2.1.0`.
    install_requires=['torch', 'torchvision', 'mmengine>=0.10.7,<1.0.0', 'mmpretrain>=1.2.0',
                      'numpy'],
    extras_require={
        'seg': ['mmsegmentation>=1.2.2', 'ftfy', 'regex'],
        'knn': ['faiss-cpu'],
        'mim': ['openmim>=0.3.9'],
        'tests': read_requirements('tests'),
        'all': ['mmsegmentation>=1.2.2', 'ftfy', 'regex', 'faiss-cpu', 'openmim>=0.3.9'] +
        read_requirements('tests'),
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.11',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)
