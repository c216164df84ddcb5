"""``python -m tokentrail`` is the ``tokentrail`` command."""

import sys

from tokentrail.cli import main

sys.exit(main())
