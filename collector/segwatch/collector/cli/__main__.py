"""``python -m segwatch.collector.cli``: the ``segwatch`` command."""

import sys

from .main import main

sys.exit(main())
