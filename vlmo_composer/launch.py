"""``python -m vlmo_composer.launch [composer launcher arguments]``: Composer's launcher that
passes SIGTERM on to the training ranks.

Composer's launcher (0.32.1, ``composer.cli.launcher``) installs no SIGTERM handler:
a SIGTERM sent to it (Kubernetes and spot termination signal the container's main
process) kills the launcher at once and the ranks never hear of it. Only Ctrl-C is
forwarded: on ``KeyboardInterrupt`` the launcher sends SIGTERM to every rank, waits
up to 30 s for them to exit, then SIGKILLs what is left. This entry point turns
SIGTERM into that same path, so each rank gets SIGTERM and saves its checkpoint
(``PreemptionCheckpoint``) within the launcher's 30 s.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, NoReturn

from composer.cli.launcher import main as composer_launcher


def _as_interrupt(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _as_interrupt)
    return composer_launcher()


if __name__ == "__main__":
    sys.exit(main())
