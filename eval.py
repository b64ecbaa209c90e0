"""Entry point: ``python eval.py <config.yaml> [key.path=value ...] [--weights PATH --kind KIND] [--rerank-k K]``.

``python eval.py zeroshot --data DIR --weights PATH ...`` runs zero-shot image classification.
"""

import sys

from vlmo_composer.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
