"""Execute a notebook top to bottom with nbclient, writing it to OUT after every cell and echoing each cell's text
output, so that a run stopped by a deadline still leaves every cell it finished (benchmarks/gpu_session.sh).

    python benchmarks/run_notebook.py notebooks/07_gpu_training.ipynb --out DIR [--timeout SECONDS]

Exit code 0 when every cell ran, 1 when a cell failed (the notebook up to that cell is in DIR)."""

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for the executed notebook")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    args = p.parse_args(argv)
    nb = nbformat.read(args.notebook, as_version=4)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / args.notebook.name
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(args.notebook.parent.resolve())}})
    client.reset_execution_trackers()
    start = time.perf_counter()
    with client.setup_kernel():
        info = client.wait_for_reply(client.kc.kernel_info())
        nb.metadata["language_info"] = info["content"]["language_info"]
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            t0 = time.perf_counter()
            try:
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            except CellExecutionError as e:
                nbformat.write(nb, target)
                print(f"cell {index} FAILED after {time.perf_counter() - t0:.0f} s:\n{str(e)[-3000:]}", flush=True)
                return 1
            nbformat.write(nb, target)  # every finished cell is kept, whatever happens next
            text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
            print(f"--- cell {index} ({time.perf_counter() - t0:.1f} s, {time.perf_counter() - start:.0f} s in all)"
                  f"\n{text.rstrip()}", flush=True)
    print(f"{args.notebook}: executed in {time.perf_counter() - start:.0f} s, written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
