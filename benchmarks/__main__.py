"""``python -m samplerbench`` (and ``torchrun -m samplerbench run SUITE`` for a sharded run)."""

import sys

from samplerbench.cli import main

sys.exit(main())
