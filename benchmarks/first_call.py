"""Time the first and the second call of each method in this fresh process; print the result as JSON.

Run by ``run_benchmarks.py`` in a subprocess, with the on-disk Numba cache
left as it is. When the cache is valid, the first call pays for loading the
cached machine code. When it is missing or stale (the package sources changed
since it was written), the import and the first call pay for compilation.
"""

import json
import time

started = time.perf_counter()
import hierarchy  # noqa: E402  (the import is what is timed)
from hierarchy.integrators import METHODS, solve  # noqa: E402

import_seconds = time.perf_counter() - started

from cases import OUTPUT_TIMES, work_precision_case  # noqa: E402


def main():
    case = work_precision_case()
    calls = {}
    for method in METHODS:
        timings = []
        for _ in range(2):
            call_started = time.perf_counter()
            solution = solve(case.system, OUTPUT_TIMES, method=method, rtol=1e-8, atol=1e-12)
            timings.append(time.perf_counter() - call_started)
        calls[method] = {"first_seconds": timings[0], "second_seconds": timings[1], "status": solution.status.name}
    print(json.dumps({"import_seconds": import_seconds, "case": case.name, "calls": calls,
                      "package": hierarchy.__name__}))


if __name__ == "__main__":
    main()
