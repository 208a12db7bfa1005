"""Execute a notebook top to bottom with nbclient, writing it to OUT after every cell and echoing each cell's text
output, so that a run stopped by a deadline still leaves every cell it finished (benchmarks/gpu_session.sh).

    python benchmarks/run_notebook.py notebooks/07_gpu_training.ipynb --out DIR [--timeout SECONDS] [--deadline UNIX]

Exit code 0 when every cell ran; 1 when a cell raised, the kernel died, a cell ran past its timeout, the deadline
came or SIGTERM arrived: the notebook up to that cell is in DIR, that cell carries an error output saying what
happened (so that benchmarks/accept_gpu_notebook.py refuses it), and the log names the cell and the reason."""

import argparse
import signal
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError


class Terminated(SystemExit):
    "SIGTERM arrived (gpu_session.sh's backstop `timeout`): stop, save, and shut the kernel down on the way out."


def _terminate(signum, frame):
    raise Terminated(1)


def mark_failed(cell, ename: str, evalue: str) -> None:
    "Record on `cell` why the run stopped there, as an error output (nbclient records none for these)."
    cell.outputs.append(
        nbformat.v4.new_output(
            "error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue} (benchmarks/run_notebook.py)"]
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for the executed notebook")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    p.add_argument(
        "--deadline",
        type=float,
        help="Unix time by which every cell must have finished: a cell gets at "
        "most the time left, and none starts after it",
    )
    args = p.parse_args(argv)
    nb = nbformat.read(args.notebook, as_version=4)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / args.notebook.name
    client = NotebookClient(
        nb,
        timeout=args.timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(args.notebook.parent.resolve())}},
    )
    client.reset_execution_trackers()
    start = t0 = time.perf_counter()

    def stop(index: int, cell, ename: str, why: str, details: str = "") -> int:
        mark_failed(cell, ename, why)
        nbformat.write(nb, target)
        print(
            f"cell {index} FAILED ({ename}) after {time.perf_counter() - t0:.0f} s: {why}"
            + (f"\n{details[-3000:]}" if details else "")
            + f"\nthe cells before it are kept in {target}",
            flush=True,
        )
        return 1

    signal.signal(signal.SIGTERM, _terminate)
    current = None  # (index, cell) while a cell runs
    try:
        with client.setup_kernel():  # on the way out, even on SIGTERM, the kernel is shut down
            info = client.wait_for_reply(client.kc.kernel_info())
            nb.metadata["language_info"] = info["content"]["language_info"]
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                t0 = time.perf_counter()
                timeout = args.timeout
                if args.deadline is not None:
                    left = int(args.deadline - time.time())
                    if left < 1:
                        return stop(index, cell, "DeadlineReached", "the deadline came before this cell started")
                    timeout = min(timeout, left)
                client.timeout = timeout
                current = (index, cell)
                try:
                    client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                except CellTimeoutError:
                    why = f"still running after {timeout} s: " + (
                        "the session's deadline" if timeout < args.timeout else "--timeout"
                    )
                    return stop(index, cell, "CellTimeoutError", why)
                except DeadKernelError as e:
                    return stop(
                        index,
                        cell,
                        "DeadKernelError",
                        f"the kernel died while this cell ran ({e}): out "
                        "of memory, a crash in native code, or os._exit",
                    )
                except CellExecutionError as e:
                    nbformat.write(nb, target)  # the cell holds its own error output
                    print(
                        f"cell {index} FAILED after {time.perf_counter() - t0:.0f} s:\n{str(e)[-3000:]}\nthe "
                        f"cells before it are kept in {target}",
                        flush=True,
                    )
                    return 1
                nbformat.write(nb, target)  # every finished cell is kept, whatever happens next
                current = None
                text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
                print(
                    f"--- cell {index} ({time.perf_counter() - t0:.1f} s, {time.perf_counter() - start:.0f} s in "
                    f"all)\n{text.rstrip()}",
                    flush=True,
                )
    except Terminated:
        if current is not None:
            return stop(*current, "Terminated", "stopped by SIGTERM (the session's backstop timeout)")
        nbformat.write(nb, target)
        print(f"stopped by SIGTERM between cells: every finished cell is in {target}", flush=True)
        return 1
    print(f"{args.notebook}: executed in {time.perf_counter() - start:.0f} s, written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
