"""Entry point: ``composer train.py <config.yaml> [key.path=value ...] [--dry-run]``."""

import sys

from vlmo_composer.training.usage import early_answer

if __name__ == "__main__":
    # --help and a missing YAML are answered before torch and Composer are imported.
    code = early_answer(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from vlmo_composer.training.train import main

    sys.exit(main())
