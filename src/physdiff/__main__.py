"""``python -m physdiff`` (also what ``torchrun -m physdiff`` runs on each process)."""

import sys

from .cli import main

sys.exit(main())
