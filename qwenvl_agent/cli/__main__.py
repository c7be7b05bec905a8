"""``python -m qwenvl_agent.cli``: the ``qwenvl`` command."""

import sys

from . import main

sys.exit(main())
