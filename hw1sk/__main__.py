"""``python -m hw1sk`` is the ``hw1sk`` command."""

import sys

from .cli import main

sys.exit(main())
