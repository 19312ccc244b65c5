"""Run the analysis notebooks through a real Jupyter kernel with injected parameters.

Each notebook has one code cell tagged `parameters` (DATA_DIR, PROTOCOL, OUT_DIR). Its
values are replaced, papermill-style, by a cell of the same tag holding the run's values,
so a notebook runs on any data without being edited.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from outcomes.errors import OutcomesError

if TYPE_CHECKING:  # nbformat takes a second to import; the CLI loads it only for reports
    import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parents[3] / "notebooks"
NOTEBOOKS = ["00_scorecard", "01_data_quality", "02_protocol_compliance",
             "03_patient_outcomes", "04_research_export"]
#: The meeting pack: scorecard first, data quality last; the research export stays out.
REPORT_NOTEBOOKS = ["00_scorecard", "02_protocol_compliance", "03_patient_outcomes",
                    "01_data_quality"]


class NotebookError(OutcomesError):
    """A notebook failed; the message names the notebook and the cell."""


def notebook_dir() -> Path:
    """The folder of the shipped notebooks (the source tree's `notebooks/`)."""
    env = os.environ.get("OUTCOMES_NOTEBOOKS")
    return Path(env) if env else NOTEBOOK_DIR


def inject_parameters(nb: nbformat.NotebookNode, params: dict[str, Any]) -> None:
    """Give the parameters cell this run's values (written as repr) after its own defaults,
    so a parameter the run does not set keeps the notebook's default."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            lines = [f"{k} = {v!r}" for k, v in params.items()]
            cell.source = (cell.source + "\n# parameters of this run (injected)\n"
                           + "\n".join(lines))
            return
    raise NotebookError("notebook has no cell tagged 'parameters'")


def execute_notebook(path: str | Path, params: dict[str, Any], cwd: str | Path | None = None,
                     timeout: int = 600, kernel: Kernel | None = None
                     ) -> nbformat.NotebookNode:
    """Execute one notebook with `params` and return it with its outputs: in a kernel of
    its own, or in `kernel` after the notebooks before it (a fresh namespace each).

    Raises NotebookError naming the notebook, the cell number and the error's last line.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, params)
    # the kernel's start-up warnings are not for the reader of a report
    client = NotebookClient(nb, km=kernel.manager(nb) if kernel else None, timeout=timeout,
                            kernel_name="python3", extra_arguments=KERNEL_ARGUMENTS,
                            resources={"metadata": {"path": str(cwd or path.parent)}})
    if kernel is not None and kernel.used:  # the notebook before leaves nothing behind
        client.on_notebook_start = lambda **_: client.kc.execute(
            "%reset -f", silent=True, store_history=False)
    try:
        client.execute()
    except CellExecutionError as exc:
        index = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                      and any(o.get("output_type") == "error" for o in c.get("outputs", []))),
                     None)
        # the kernel colours its traceback; a terminal message must not carry the codes
        last = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
        ename = next((ln for ln in reversed(last) if ln.strip()), "error")
        where = f"cell {index + 1}" if index is not None else "a cell"
        raise NotebookError(f"notebook {path.name} failed in {where}: {ename.strip()}") from None
    finally:
        if kernel is not None:
            kernel.used = True
            if client.kc is not None:
                client.kc.stop_channels()
    return nb


#: The kernel's start-up warnings are not for the reader of a report.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


class Kernel:
    """One Jupyter kernel that runs several notebooks in turn, each in a fresh namespace
    (`%reset -f` before it): the kernel's start, its imports and its shutdown are paid
    once. Use in one thread, as a context manager."""

    def __init__(self) -> None:
        self._manager: Any = None
        self.used = False

    def manager(self, nb: nbformat.NotebookNode) -> Any:
        if self._manager is None:
            from nbclient import NotebookClient

            self._manager = NotebookClient(nb, kernel_name="python3").create_kernel_manager()
        return self._manager

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._manager is not None and self._manager.has_kernel:
            from jupyter_core.utils import run_sync

            run_sync(self._manager.shutdown_kernel)(now=False)
