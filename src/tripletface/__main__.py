"""``python -m tripletface`` runs the CLI."""

import sys

from tripletface.cli import main

sys.exit(main())
