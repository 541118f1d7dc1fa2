"""Pool start-up with a light main module: nbproc vs the stdlib (and ``multiprocess``, ``loky``).

What a script pays to use a pool once: ``Pool(2)``, ``map(f, [1])``, ``close()``, ``join()``,
where ``f`` is defined in the main module and the main module imports nothing but the library.
(``pool.py``'s ``start+shutdown`` row runs with ``pool.py`` itself as main module, which imports
numpy: there spawn and forkserver children spend their time re-importing numpy, for every
library alike, which hides the libraries' own cost.)

Each measurement is a fresh interpreter running a generated main module (:data:`MAIN`): one
warm-up pool (imports done, the fork server and the resource tracker started), a pause of
:data:`SETTLE` seconds, then :data:`CYCLES` timed pools; its figure is their median. The pause
lets what the warm-up started in the background finish: the resource tracker is a fresh
interpreter (~25 ms of CPU) that no pool waits for, so without it the first timed pools of a
library that starts one (nbproc under every start method, the stdlib under spawn and
forkserver) share the CPU with its start-up. ``--settle 0`` measures them that way.

Runs alternate between libraries and start methods (A B A B ...) so that load from elsewhere on
a shared machine hits all of them alike, and the table shows the median over :data:`ROUNDS`
runs. The forkserver rows are the *second and later* pools of a
program (its server is warm); the line ``forkserver vs stdlib fork`` compares them with the
stdlib's fork pool, the cheapest start there is.

``loky`` has no start methods of ours: its own (spawn-like, workers reused across executors
unless shut down) appears in the spawn row as ``ProcessPoolExecutor(2)``, one ``submit``,
``shutdown()``.

Run: ``python benchmarks/startup.py [--rounds N] [--methods fork,spawn,forkserver]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import compile_nbproc, optional_module, print_table  # noqa: E402

#: Timed pools per run: enough for a stable median inside one interpreter, few enough that a
#: run stays under a second for the slowest (spawn) case.
CYCLES = 7
#: Seconds between the warm-up pool and the timed ones (``--settle``): a booting resource
#: tracker takes ~25 ms of CPU; 0.3 s covers it on a loaded 2-core machine.
SETTLE = 0.3
#: Alternating runs per (library, method); the brief asks for at least 3 (A B A B).
ROUNDS = 5

MAIN = """
import importlib, json, sys, time

lib_name, method, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
SETTLE = float(sys.argv[4])


def f(x):
    return x


def one_pool(lib, method):
    if lib_name == "loky":
        ex = lib.ProcessPoolExecutor(max_workers=2)
        ex.submit(f, 1).result()
        ex.shutdown(wait=True)
        return
    pool = lib.get_context(method).Pool(2)
    pool.map(f, [1])
    pool.close()
    pool.join()


if __name__ == "__main__":
    lib = importlib.import_module(lib_name)
    one_pool(lib, method)  # warm-up: imports, the fork server, the resource tracker
    time.sleep(SETTLE)  # ... which boots in the background: let it finish (see the docstring)
    times = []
    for _ in range(cycles):
        t0 = time.perf_counter()
        one_pool(lib, method)
        times.append(time.perf_counter() - t0)
    print(json.dumps(times))
"""


def run_once(script: str, lib: str, method: str, settle: float) -> float:
    """Median pool time of one fresh interpreter (seconds)."""
    out = subprocess.run(
        [sys.executable, script, lib, method, str(CYCLES), str(settle)],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(script),
    )
    return statistics.median(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--methods", default="fork,spawn,forkserver")
    parser.add_argument("--settle", type=float, default=SETTLE, help="seconds after the warm-up pool")
    args = parser.parse_args()
    methods = args.methods.split(",")
    compile_nbproc()
    libs = {"stdlib": "multiprocessing", "nbproc": "nbproc"}
    if optional_module("multiprocess") is not None:
        libs["multiprocess"] = "multiprocess"
    if optional_module("loky") is not None:
        libs["loky"] = "loky"
    cases = [(label, module, method) for method in methods for label, module in libs.items()]
    cases = [c for c in cases if c[0] != "loky" or c[2] == "spawn"]
    runs: dict[tuple[str, str], list[float]] = {(label, method): [] for label, _, method in cases}
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "light_main.py")
        with open(script, "w") as file:
            file.write(MAIN)
        env_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [env_path, os.environ.get("PYTHONPATH")]))
        for _ in range(args.rounds):  # A B A B: every case once per round
            for label, module, method in cases:
                runs[(label, method)].append(run_once(script, module, method, args.settle))
    medians = {key: statistics.median(values) for key, values in runs.items()}
    rows = []
    for method in methods:
        results = {label: medians.get((label, method)) for label in libs}
        rows.append(("Pool(2) + 1 task + close/join", method, results))
    title = f"Pool start-up, light main module (median of {args.rounds} alternating runs of {CYCLES} pools"
    print_table(f"{title}, {args.settle} s after the warm-up pool)", rows)
    print("\nTargets:")
    for method in methods:
        nb, std = medians[("nbproc", method)], medians[("stdlib", method)]
        print(f"  {method:10} nbproc/stdlib {nb / std:5.2f}  (<= 1.10: {'ok' if nb <= 1.10 * std else 'MISSED'})")
    if "forkserver" in methods and "fork" in methods:
        nb, fork = medians[("nbproc", "forkserver")], medians[("stdlib", "fork")]
        print(f"  forkserver vs stdlib fork {nb / fork:5.2f}  (<= 1.00: {'ok' if nb <= fork else 'MISSED'})")
    spread = "; ".join(f"{lib}/{method} {min(v) * 1e3:.1f}-{max(v) * 1e3:.1f}" for (lib, method), v in runs.items())
    print(f"\nSpread over runs (ms): {spread}")


if __name__ == "__main__":
    main()
