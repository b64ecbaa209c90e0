"""Entry point: ``composer train.py <config.yaml> [key.path=value ...]``."""

import sys

from vlmo_composer.training.train import main

if __name__ == "__main__":
    sys.exit(main())
