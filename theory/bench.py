"""Time the symbolic column: ``python -m theory.bench [--repeat N]``.

Runs every claim's symbolic check serially in this process, prints CPU and wall seconds per
claim (slowest first) and the totals, per repeat. CPU time is the figure to read on a shared
machine; wall time includes waiting for the CPU. The first repeat is the one
``coupling verify`` pays: later repeats reuse sympy's in-process caches and run faster.
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theory.bench")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    from theory.catalogue import CLAIMS

    print(f"import: {time.process_time() - cpu0:.2f} s CPU, {time.perf_counter() - wall0:.2f} s wall")
    for rep in range(args.repeat):
        rows = []
        for claim in CLAIMS:
            c, w = time.process_time(), time.perf_counter()
            status = claim.symbolic().status
            rows.append((claim.id, status, time.process_time() - c, time.perf_counter() - w))
        print(f"repeat {rep + 1}: load average {os.getloadavg()[0]:.1f}")
        for claim_id, status, cpu, wall in sorted(rows, key=lambda r: -r[2]):
            print(f"  {claim_id:22s} {status:5s} {cpu:6.2f} s CPU {wall:6.2f} s wall")
        print(f"  total: {sum(r[2] for r in rows):.2f} s CPU, {sum(r[3] for r in rows):.2f} s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
