"""``python -m vlmo_composer.export``: see :mod:`vlmo_composer.inference.export_cli`."""

import sys

from vlmo_composer.inference.export_cli import main

if __name__ == "__main__":
    sys.exit(main())
