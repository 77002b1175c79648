"""``python -m serving.cli``: the same as the ``slimgate`` command."""

import sys

from serving.cli import main

sys.exit(main())
