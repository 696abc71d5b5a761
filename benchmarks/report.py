"""What the benchmark tools (``tools/benchmark_*.py``) share: the machine a number was measured
on, byte and table formatting, and their sections of ``docs/benchmarks.md``, each between
``<!-- NAME:start -->`` / ``<!-- NAME:end -->`` markers and rewritten atomically."""
import contextlib
import os
import os.path as osp
import platform
from typing import Dict, List, Optional, Sequence

from cotap_mm.utils.fileio import atomic_write_text

__all__ = ['machine_info', 'machine_line', 'proc_status_kib', 'peak_memory_of', 'fmt_bytes',
           'markdown_table', 'section_markers', 'read_section', 'write_section']


def _cpu_name() -> str:
    cpu = platform.processor() or 'unknown CPU'
    with contextlib.suppress(OSError, StopIteration):
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if 'model name' in line)
    return cpu


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in KiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def peak_memory_of(fn, cuda: bool):
    """Run ``fn()`` once; its peak memory in bytes, absolute and above what was held before,
    and how it was measured: ``torch.cuda.max_memory_allocated`` on CUDA, else the peak RSS
    (``VmHWM`` reset through ``/proc/self/clear_refs``, after ``malloc_trim`` returned freed heap
    to the OS so that the baseline is the live memory)."""
    import ctypes
    import gc

    import torch
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return dict(peak=peak, extra=peak - base, method='torch.cuda.max_memory_allocated')
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak RSS (VmHWM) to the current RSS
    base = proc_status_kib('VmRSS')
    fn()
    peak = proc_status_kib('VmHWM')
    return dict(peak=peak * 1024, extra=max(peak - base, 0) * 1024,
                method='VmHWM - VmRSS (/proc/self/clear_refs, malloc_trim)')


def machine_info(device: str = 'cpu', threads: Optional[int] = None) -> Dict[str, object]:
    """CPU, cores, torch threads, versions, device (and the GPU's name) and the load average."""
    import torch
    info = dict(cpu=_cpu_name(), cores=os.cpu_count(),
                torch_threads=torch.get_num_threads() if threads is None else threads,
                torch=torch.__version__, python=platform.python_version(), device=device,
                load_average=[round(x, 2) for x in os.getloadavg()])
    if str(device).startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
        info['cuda'] = torch.version.cuda
    return info


def machine_line(info: Dict[str, object]) -> str:
    """One line for the docs: the GPU, or the CPU with its cores and threads; the versions."""
    where = info.get('gpu') or (f'{info["cpu"]}, {info["cores"]} cores, '
                                f'{info["torch_threads"]} torch threads')
    cuda = f', CUDA {info["cuda"]}' if info.get('cuda') else ''
    return f'{where}, torch {info["torch"]}{cuda}, Python {info["python"]}'


def fmt_bytes(b: float) -> str:
    for unit, scale in (('GB', 1 << 30), ('MB', 1 << 20), ('KB', 1 << 10)):
        if abs(b) >= scale:
            return f'{b / scale:.1f} {unit}'
    return f'{int(b)} B'


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Markdown lines: the first column left-aligned, the others right-aligned."""
    lines = ['| ' + ' | '.join(headers) + ' |',
             '|' + '|'.join(['---'] + ['---:'] * (len(headers) - 1)) + '|']
    return lines + ['| ' + ' | '.join(r) + ' |' for r in rows]


def section_markers(name: str):
    return f'<!-- {name}:start -->', f'<!-- {name}:end -->'


def read_section(path: str, name: str) -> str:
    """The text between the ``name`` markers of ``path`` ('' if the file or markers are absent)."""
    start, end = section_markers(name)
    if not osp.exists(path):
        return ''
    with open(path) as f:
        text = f.read()
    if start not in text or end not in text:
        return ''
    return text.split(start, 1)[1].split(end, 1)[0].strip('\n')


def write_section(path: str, name: str, body: str, heading: str) -> None:
    """Put ``body`` between the ``name`` markers of ``path``; a file without them gets a new
    ``## heading`` with the section at its end. The rest of the file is kept."""
    start, end = section_markers(name)
    section = f'{start}\n\n{body.strip(chr(10))}\n\n{end}'
    text = open(path).read() if osp.exists(path) else '# Benchmarks\n'
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip('\n') + f'\n\n## {heading}\n\n' + section + '\n'
    atomic_write_text(path, text)
