"""Console entry point: says when the first run compiles, then runs the command line."""

import sys


def main() -> int:
    """Run ``hierarchy``, telling the user first when Numba has to compile the kernels."""
    from .numba_cache import compiled_kernels_present

    if not compiled_kernels_present():
        # Importing the command line compiles every kernel, which prints nothing for a while.
        print(
            "hierarchy: compiling the integrators with Numba; this happens once and takes under a minute",
            file=sys.stderr,
            flush=True,
        )
    from .cli import main as cli_main

    return cli_main()
