"""Entry point: ``python eval.py <config.yaml> [key.path=value ...] [--checkpoint PATH] [--rerank-k K]``."""

import sys

from vlmo_composer.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
