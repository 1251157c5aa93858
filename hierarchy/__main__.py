"""Entry point of ``python -m hierarchy``, which runs :func:`hierarchy.entry.main`."""

import sys

from .entry import main

sys.exit(main())
