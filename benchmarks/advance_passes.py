"""The work loop's pass over unfinished blocks (``Pipeline.advance``): blocks looked at
(classified and advanced) and CPU seconds per pass, looking at every unfinished block each
pass (as before the pass became incremental) side by side with looking only at the blocks
whose stages changed (now).

    python -m benchmarks.advance_passes [--blocks 200] [--passes 20]

A SQLite state store (the shipped durability) holds ``--blocks`` sealed blocks, each with
its first stage queued and unfinished (a backlog). Each mode runs ``--passes`` passes after
its first one; between passes another process's change is simulated every fifth pass (one
stage failed transiently and requeued, through a second connection). CPU seconds are this
process's (``time.process_time``): the state store is in-process. Results land in
``benchmarks/results/advance_passes.md``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.chains import write_report
from benchmarks.run import RESULTS
from contimg_dask.config import load_config
from contimg_dask.errors import ContimgError
from contimg_dask.pipeline import Pipeline
from contimg_dask.state import open_state_store


def _stamp(i: int) -> str:
    t = time.gmtime(1_772_323_200 + 309 * i)  # 2026-03-01T00:00:00 UTC, one block per 309 s
    return time.strftime("%Y-%m-%dT%H:%M:%S", t)


def _run(root: Path, n_blocks: int, passes: int, everything: bool) -> dict:
    config = load_config(environment="development", environ={},
                         overrides={"paths.root": str(root)})
    state = open_state_store(config)
    for i in range(n_blocks):
        state.register_file(_stamp(i), str(root / f"{_stamp(i)}_sb00.hdf5"), 0)
        state.seal_block(_stamp(i), 1, 0.0)
    other = open_state_store(config)
    looked: list[int] = []
    cpu: list[float] = []
    with Pipeline(config, state=state) as pipeline:
        real = pipeline._advance_block

        def counted(block_id: str) -> str:
            looked[-1] += 1
            return real(block_id)

        pipeline._advance_block = counted
        if everything:  # every pass as the first one: every unfinished block
            pipeline._changes.take = lambda: None
        looked.append(0)
        pipeline.advance()  # the first pass (both modes look at everything)
        for i in range(passes):
            if i % 5 == 4:
                lease = other.claim("elsewhere", 30.0, ["ingest"])
                other.fail(lease, ContimgError("disk away", transient=True))
            looked.append(0)
            t0 = time.process_time()
            pipeline.advance()
            cpu.append(time.process_time() - t0)
    other.close()
    state.close()
    return {"first": looked[0], "looked": looked[1:], "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=200)
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    results = {}
    for name, everything in (("every block", True), ("changed blocks", False)):
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = _run(Path(tmp), args.blocks, args.passes, everything)
    load = os.getloadavg()
    lines = [f"# Work-loop passes over {args.blocks} unfinished blocks "
             "(benchmarks/advance_passes.py)", "",
             f"{args.passes} passes after the first; another process requeues a stage every "
             f"fifth pass. Load average during the run: {load[0]:.1f} (CPU seconds are "
             "this process's own).", "",
             "| pass looks at | blocks looked at, first pass | blocks looked at per pass "
             "(mean, max) | CPU ms per pass (mean, max) |", "| --- | --- | --- | --- |"]
    for name, r in results.items():
        looked, cpu = r["looked"], r["cpu_s"]
        lines.append(f"| {name} | {r['first']} | {sum(looked) / len(looked):.1f}, "
                     f"{max(looked)} | {1e3 * sum(cpu) / len(cpu):.1f}, "
                     f"{1e3 * max(cpu):.1f} |")
    every, changed = (sum(results[n]["cpu_s"]) for n in ("every block", "changed blocks"))
    lines += ["", f"- CPU per pass, every block / changed blocks: {every / changed:.0f}x"]
    write_report(RESULTS / "advance_passes.md", lines)


if __name__ == "__main__":
    main()
