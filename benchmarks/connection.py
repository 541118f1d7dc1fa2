"""Listener/Client and Pipe costs: nbproc vs stdlib ``multiprocessing`` (and ``multiprocess``).

Both ends run in one process (an echo thread), so no start method is involved and the
numbers isolate the connection layer:

* ``connect + authenticate``  ``Client(authkey)`` + ``Listener.accept()`` with the HMAC
  handshake both ways (nbproc reads the handshake under a deadline; the stdlib blocks)
* ``small round trip``        send a small tuple, the echo thread sends it back (Listener/Client)
* ``16 MB round trip``        the same with a 16 MB numpy array; nbproc's Listener/Client
  connections send in-band by default (readable by a stdlib peer); ``out_of_band=True``
  is the nbproc-to-nbproc fast path
* ``Pipe small round trip``   for reference

Run: ``python benchmarks/connection.py [--quick]``. The ratio column is nbproc / stdlib (below
1: nbproc faster). Medians of a few repeats; the machine may be shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import importlib
import threading
from typing import Any

import numpy as np
from _common import median_time, optional_module, print_table

KEY = b"benchmark key"
SMALL = (1, "two", 3.0)
BIG = np.arange(16 * 1024 * 1024 // 8, dtype=np.float64)


def _echo(conn: Any) -> None:
    try:
        while True:
            conn.send(conn.recv())
    except EOFError:
        pass
    finally:
        conn.close()


def _pair(conn_mod: Any, **listener_kwargs: Any) -> tuple[Any, Any, threading.Thread]:
    """A connected, authenticated (client, server) pair with an echo thread on the server end."""
    with conn_mod.Listener(("127.0.0.1", 0), authkey=KEY, **listener_kwargs) as listener:
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(listener.accept()))
        t.start()
        client = conn_mod.Client(listener.address, authkey=KEY, **listener_kwargs)
        t.join()
    echo = threading.Thread(target=_echo, args=(box[0],), daemon=True)
    echo.start()
    return client, box[0], echo


def _connect_cost(conn_mod: Any, n: int, repeat: int) -> float:
    with conn_mod.Listener(("127.0.0.1", 0), authkey=KEY) as listener:

        def accept_all() -> None:
            for _ in range(n):
                listener.accept().close()

        def run() -> None:
            t = threading.Thread(target=accept_all)
            t.start()
            for _ in range(n):
                conn_mod.Client(listener.address, authkey=KEY).close()
            t.join()

        return median_time(run, repeat) / n


def _round_trip(client: Any, item: Any, n: int, repeat: int) -> float:
    def run() -> None:
        for _ in range(n):
            client.send(item)
            client.recv()

    run()  # warm up
    return median_time(run, repeat) / n


def bench(conn_mod: Any, pipe: Any, quick: bool, **kwargs: Any) -> dict[str, float]:
    repeat = 3 if quick else 5
    results = {"connect + authenticate": _connect_cost(conn_mod, 20 if quick else 100, repeat)}
    client, _server, echo = _pair(conn_mod, **kwargs)
    results["small round trip"] = _round_trip(client, SMALL, 300 if quick else 2000, repeat)
    results["16 MB round trip"] = _round_trip(client, BIG, 3 if quick else 10, repeat)
    client.close()
    echo.join()
    a, b = pipe()
    echo = threading.Thread(target=_echo, args=(b,), daemon=True)
    echo.start()
    results["Pipe small round trip"] = _round_trip(a, SMALL, 300 if quick else 2000, repeat)
    a.close()
    echo.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()

    libs: dict[str, dict[str, float]] = {}
    std = importlib.import_module("multiprocessing.connection")
    libs["stdlib"] = bench(std, std.Pipe, args.quick)
    nb = importlib.import_module("nbproc.connection")
    libs["nbproc"] = bench(nb, nb.Pipe, args.quick)
    fast = bench(nb, nb.Pipe, args.quick, out_of_band=True)
    if optional_module("multiprocess") is not None:
        mp = importlib.import_module("multiprocess.connection")
        libs["multiprocess"] = bench(mp, mp.Pipe, args.quick)

    units = {"connect + authenticate": "ms", "small round trip": "us", "16 MB round trip": "ms"}
    for case, unit in [*units.items(), ("Pipe small round trip", "us")]:
        row = {lib: results[case] for lib, results in libs.items()}
        print_table(case, [(case, "threads", row)], unit=unit)
    row = {"nbproc": fast["16 MB round trip"], "stdlib": libs["stdlib"]["16 MB round trip"]}
    print_table("16 MB round trip, nbproc with out_of_band=True", [("16 MB round trip", "threads", row)], unit="ms")


if __name__ == "__main__":
    main()
