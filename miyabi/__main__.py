"""``python -m miyabi``."""

from miyabi.cli import main

main()
