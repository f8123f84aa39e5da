"""`python -m clipsurgery_widgets ...` is the `clipsurgery` command."""
import sys

from .cli import main

sys.exit(main())
