"""`python -m savl` is the `savl` command."""

import sys

from savl.cli import main

sys.exit(main())
