"""The learning notebooks (notebooks/*.ipynb) run from a clean checkout, and their checks pass.

Each notebook is executed in memory with nbclient (scripts/notebooks.py `execute`), on a kernel
that runs this very interpreter, with the notebook's folder as the working directory (as Jupyter
runs it). A cell that raises fails the test, every `assert` check of a stage included, and so
does a notebook that runs out of time (NPCLIP_NOTEBOOK_TIMEOUT seconds, default 120; each takes
under 30 s on two cores). Every notebook runs twice: with transformers, when installed, which
turns on its comparisons with the reference, and with transformers hidden from the kernel, as
with npclip alone.

nbclient, nbformat, ipykernel and matplotlib are test dependencies: without them these tests
skip on a developer's machine and fail under CI (the CI environment variable), as the parity
tests do without transformers (conftest.reference). Under CI transformers is required too, so
that the notebooks' comparisons cannot be skipped silently.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from conftest import IN_CI, reference

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
TIMEOUT = float(os.environ.get("NPCLIP_NOTEBOOK_TIMEOUT", 120))
EXPECTED = ["01_text_to_tokens", "02_image_to_pixels", "03_vision_transformer", "04_text_transformer",
            "05_two_towers_meet", "06_verify_an_implementation"]


@pytest.fixture(scope="module")
def tool():
    """scripts/notebooks.py, once its dependencies are known to be importable."""
    for module in ("nbformat", "nbclient", "ipykernel", "matplotlib"):
        reference(module)
    if IN_CI:
        reference("transformers")
    spec = importlib.util.spec_from_file_location("npclip_notebooks", ROOT / "scripts" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(tool, path, **kwargs):
    """Execute a notebook; a failing cell or a timeout fails the test with the notebook's own traceback."""
    try:
        return tool.execute(path, TIMEOUT, **kwargs)
    except tool.NotebookError as e:
        pytest.fail(str(e), pytrace=False)


def test_the_six_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_notebook_runs_and_its_checks_pass(tool, path):
    nb, seconds = run(tool, path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])), \
        f"{path.name} drew no figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_notebook_runs_without_transformers(tool, path):
    nb, seconds = run(tool, path, without=("transformers",))
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "transformers is not installed: skipped" in text or "transformers not installed" in text


def test_setup_finds_the_repository_from_its_root(tool):
    """The first cell finds this checkout whether Jupyter starts in notebooks/ or in the root."""
    nb, _ = run(tool, NOTEBOOKS[0], cwd=ROOT, cells=1)
    assert str(ROOT / "npclip") in "".join(o.get("text", "") for o in nb.cells[1].outputs)


def test_notebooks_are_committed_without_outputs(tool):
    dirty = [p.name for p in NOTEBOOKS if not tool.is_stripped(p)]
    assert not dirty, f"{dirty} hold outputs: run `python scripts/notebooks.py strip` before committing"
