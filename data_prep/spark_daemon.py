"""Spark's Python daemon, with Streaming (and torch) imported before it forks workers.

``--engine spark`` sets ``spark.python.daemon.module`` to this module. Every
Python worker of an executor forks from its daemon, so the several seconds of
``import streaming`` are paid once per executor, not once per worker (the
local engine forks its workers after the same import, for the same reason).
"""

import streaming  # noqa: F401
from pyspark import daemon

if __name__ == "__main__":
    daemon.manager()
