"""``python -m maskgit_lib.cli ...`` runs the ``maskgit`` command (torchrun and subprocess tests use it)."""

import sys

from . import main

sys.exit(main())
