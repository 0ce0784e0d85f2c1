"""Run, strip and check the learning notebooks in notebooks/ (docs/notebooks.md).

    python scripts/notebooks.py run   [NOTEBOOK ...]   execute in place: outputs (figures) written into the files
    python scripts/notebooks.py strip [NOTEBOOK ...]   remove outputs and execution counts (before committing)
    python scripts/notebooks.py check [NOTEBOOK ...]   exit 1 if a notebook holds outputs (CI, pre-commit)
    python scripts/notebooks.py test  [NOTEBOOK ...]   execute each in memory and time it; files untouched
    python scripts/notebooks.py test --without transformers    ... as if transformers were not installed

The notebooks are committed WITHOUT outputs: diffs stay readable and the repository holds no
base64 figures that change on every run. `run` regenerates every output with one command (to
read them in Jupyter, or to look at the figures); `strip` undoes it. NOTEBOOK is a path or a
name (`01`, `01_text_to_tokens`); none means all of notebooks/*.ipynb.

The kernel is always this interpreter (sys.executable): a kernel spec naming it is written to a
temporary directory and handed to jupyter_client, so a "python3" kernel spec elsewhere on the
machine (a user-level one, another virtual environment's) can never run the notebooks with
other packages. It needs nbclient, nbformat and ipykernel installed in this interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TIMEOUT = 120  # seconds a notebook may take (each takes well under 30 s on two CPU cores)
KERNEL_NAME = "npclip-notebooks"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of IPython's tracebacks
# The notebook-level metadata a stripped notebook keeps (nbclient adds the kernel's Python version).
METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


class NotebookError(RuntimeError):
    """A notebook that failed: a cell raised (an assert-check included) or it ran out of time."""


def notebook_paths(names=()) -> list[Path]:
    """Paths of the notebooks named (paths, or prefixes of names in notebooks/); all when none."""
    every = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    if not names:
        return every
    paths = []
    for name in names:
        if os.path.isfile(name):
            paths.append(Path(name).resolve())
            continue
        found = [p for p in every if p.stem.startswith(Path(name).stem)]
        if len(found) != 1:
            raise SystemExit(f"{name}: matches {len(found)} notebooks in {NOTEBOOKS} (expected one)")
        paths.append(found[0])
    return paths


# ----------------------------------------------------------------------------------------------
# Executing


def kernel_manager_class(kernel_dir, without=()):
    """A KernelManager class whose only kernel spec runs ipykernel on this interpreter.

    without: modules the kernel cannot import (a stub raising ImportError shadows each), to check
    that the notebooks also run with npclip alone.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = Path(kernel_dir) / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"npclip ({sys.executable})", "language": "python"}
    if without:
        stubs = Path(kernel_dir) / "hidden"
        stubs.mkdir(exist_ok=True)
        for module in without:
            stub = f"raise ModuleNotFoundError('{module} is hidden from this kernel', name='{module}')\n"
            (stubs / f"{module}.py").write_text(stub)
        path = os.pathsep.join(p for p in (str(stubs), os.environ.get("PYTHONPATH")) if p)
        spec["env"] = {"PYTHONPATH": path}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")

    class Manager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs["kernel_spec_manager"] = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
            if os.name == "posix":  # Unix sockets in the temporary directory: no TCP port, nothing to encrypt
                kwargs.update(transport="ipc", ip=str(Path(kernel_dir) / "ipc"))
            super().__init__(**kwargs)

    return Manager


def execute(path, timeout=TIMEOUT, cwd=None, cells=None, without=()):
    """Execute a notebook in memory -> (the executed notebook, seconds).

    cwd: the kernel's working directory (default: the notebook's folder, as Jupyter runs it).
    cells: run only the first `cells` code cells. without: modules hidden from the kernel
    (e.g. ("transformers",)). Raises NotebookError naming the notebook and the failing cell,
    with its traceback, or saying it ran out of time.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    if cells is not None:
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"][:cells]
        nb.cells = nb.cells[: code[-1] + 1] if code else []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="npclip-kernel-") as kernel_dir:
        manager = kernel_manager_class(kernel_dir, without)
        client = NotebookClient(nb, kernel_name=KERNEL_NAME, kernel_manager_class=manager, timeout=timeout,
                                record_timing=False, shutdown_kernel="immediate",
                                resources={"metadata": {"path": str(cwd or Path(path).parent)}})
        try:
            asyncio.run(asyncio.wait_for(client.async_execute(), timeout))
        except CellExecutionError as e:
            raise NotebookError(f"{Path(path).name}: a cell failed\n{ANSI.sub('', str(e))}") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise NotebookError(f"{Path(path).name}: did not finish within {timeout} s") from None
    return nb, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------
# Stripping


def strip(nb):
    """A copy without outputs, execution counts or run-dependent metadata."""
    nb = copy.deepcopy(nb)
    nb.metadata = copy.deepcopy(METADATA)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def is_stripped(path) -> bool:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return nb == strip(nb)


def write(nb, path) -> None:
    import nbformat

    nbformat.validate(nb)
    nbformat.write(nb, path)


# ----------------------------------------------------------------------------------------------
# Command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run", "strip", "check", "test"))
    parser.add_argument("notebooks", nargs="*", help="paths or names (01, 01_text_to_tokens); default: all")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help=f"seconds per notebook (default {TIMEOUT})")
    parser.add_argument("--without", action="append", default=[], metavar="MODULE",
                        help="hide a module from the kernel, e.g. --without transformers (repeatable)")
    args = parser.parse_intermixed_args(argv)
    paths = notebook_paths(args.notebooks)
    if args.command == "strip":
        import nbformat

        for path in paths:
            write(strip(nbformat.read(path, as_version=4)), path)
        print(f"stripped {len(paths)} notebooks")
        return 0
    if args.command == "check":
        dirty = [p for p in paths if not is_stripped(p)]
        for p in dirty:
            print(f"{p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}: holds outputs; "
                  f"run `python scripts/notebooks.py strip` before committing")
        return 1 if dirty else 0
    failed = 0
    for path in paths:
        try:
            nb, seconds = execute(path, args.timeout, without=args.without)
        except NotebookError as e:
            print(f"FAILED {e}", file=sys.stderr)
            failed += 1
            continue
        if args.command == "run":
            nb.metadata = copy.deepcopy(METADATA)
            write(nb, path)
        print(f"{'ran' if args.command == 'run' else 'ok '} {path.name:34s} {seconds:5.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
