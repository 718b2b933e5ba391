"""``python -m realcam ...`` is ``realcam ...`` (for environments where the console script is not on PATH)."""
import sys

from realcam.cli import main

sys.exit(main())
