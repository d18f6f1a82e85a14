"""``python -m segwatch.collector.cli``: the ``segwatch`` command."""

import sys

from segwatch.collector.cli import main

sys.exit(main())
