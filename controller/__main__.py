"""`python -m controller` runs netagent-controller."""

import sys

from controller.cli import main

sys.exit(main())
