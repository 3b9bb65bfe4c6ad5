"""``python -m kosmos`` = the ``kosmos`` command."""
import sys

from kosmos.cli import main

sys.exit(main())
