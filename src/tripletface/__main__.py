"""``python -m tripletface`` runs the CLI."""

from tripletface.cli import run

run()
