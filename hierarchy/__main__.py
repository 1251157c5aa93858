"""Entry point of ``python -m hierarchy``, which runs :func:`hierarchy.cli.main`."""

import sys

from .cli import main

sys.exit(main())
