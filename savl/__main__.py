"""`python -m savl` is the `savl` command."""

import sys

try:
    from savl.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python is still loading the command: no traceback
    print("savl: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
