"""The one parallel, resumable MDS writer every converter goes through.

A split's records are cut into contiguous groups of ``group_size`` records;
a job planned per input (``SplitJob.sources``: the web-pair and text converters)
has one group per input file, byte range of a file or share of a list instead,
whose records the worker reads itself, so the driver's plan grows with the
inputs, not with the records.
Each group is written by one worker process with its own ``MDSWriter`` into
``<split>/<group>/`` and, once finished (and uploaded, for ``s3://``), marked
by ``<group>/_SUCCESS`` holding its counts. Streaming's ``merge_index`` then
lists the groups in order in ``<split>/index.json``. Because the groups do not
depend on the number of workers, 1 or N workers write the same samples in the
same order, in the same shards.

Re-running after a crash keeps finished groups, deletes unfinished ones and
writes them again. A ``conversion_manifest.json`` records what produced the
output; a re-run with other settings or inputs is refused with a message
naming ``--overwrite``, so data from two conversions never mix.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from data_prep.common import SPARK_RUN_MARKER, ConversionError, SkipRecord
from data_prep.report import SkipLog, SplitReport, format_summary
from data_prep.storage import Destination, open_destination
from vlmo_composer.data.schema import Schema

MANIFEST_NAME = "conversion_manifest.json"
REPORT_NAME = "conversion_report.json"
GROUP_DONE_NAME = "_SUCCESS"
MANIFEST_VERSION = 1

RECORD_DELAY_ENV = "DATA_PREP_TEST_RECORD_DELAY_S"
"""Testing aid: seconds each worker sleeps per record, so a test can kill a run midway."""


@dataclass(frozen=True)
class WriterOptions:
    num_workers: int = 1
    compression: str | None = "zstd"
    shard_size: int | str = "64mb"
    group_size: int = 1000
    limit: int | None = None
    overwrite: bool = False
    staging_dir: str | None = None
    show_progress: bool = True
    engine: str = "local"
    """Who runs the groups: ``local`` (a process pool) or ``spark`` (one Spark task per group)."""
    spark_master: str | None = None
    """``--engine spark``: the cluster's master URL (default ``local[num_workers]``, or spark-submit's)."""

    def settings(self) -> dict[str, Any]:
        """What changes the written bytes (and so must match to resume)."""
        return {"compression": self.compression, "shard_size": self.shard_size,
                "group_size": self.group_size, "limit": self.limit}


class SampleContext:
    """Handed to a converter's build function: where dropped parts are counted.

    Drops are held per record and only counted when the record is written, so
    a skipped record is reported once, under its own reason.
    """

    def __init__(self) -> None:
        self.dropped = SkipLog()
        self.skipped = SkipLog()
        self._pending: list[tuple[str, Any]] = []

    def drop(self, reason: str, item_id: Any) -> None:
        """Count a left-out part of this record (e.g. one empty caption of five)."""
        self._pending.append((reason, item_id))

    def skip(self, reason: str, item_id: Any) -> None:
        """Count a skipped input item inside a record that batches several (text lines)."""
        self.skipped.add(reason, item_id)

    def end_record(self, written: bool) -> None:
        if written:
            for reason, item_id in self._pending:
                self.dropped.add(reason, item_id)
        self._pending.clear()


BuildFn = Callable[[Any, SampleContext], "dict[str, Any] | list[dict[str, Any]]"]


@dataclass
class SplitJob:
    """Everything needed to write one split.

    ``records`` are small picklable objects with a ``record_id`` attribute;
    ``build`` (a module-level function or a ``functools.partial`` of one, so
    worker processes can receive it) turns one record into one sample or a list
    of samples, or raises :class:`SkipRecord`. ``skipped``/``dropped`` hold what
    was already left out while reading the annotations.
    """

    split: str
    schema: Schema
    records: list[Any]
    build: BuildFn
    skipped: SkipLog = field(default_factory=SkipLog)
    dropped: SkipLog = field(default_factory=SkipLog)
    extra_files: dict[str, str] = field(default_factory=dict)
    sources: list[Any] | None = None
    """Planned per input instead of per record: one group per source, and ``records``
    stays empty. A source is a small picklable object with ``name`` (its input, as the
    manifest lists it), ``fingerprint`` (what changes when its content does: size and
    mtime, or a range's hash) and ``plan(skipped)``, which the worker calls to get the source's records in
    input order (adding what it leaves out to ``skipped``)."""

    def with_records_planned(self, limit: int | None) -> SplitJob:
        """A per-record job of the first ``limit`` records (``--limit`` on a per-source job:
        the driver reads only the sources it needs)."""
        if self.sources is None:
            return SplitJob(self.split, self.schema, self.records[:limit], self.build, self.skipped,
                            self.dropped, self.extra_files)
        skipped = SkipLog()
        skipped.merge(self.skipped)
        records: list[Any] = []
        for source in self.sources:
            if limit is not None and len(records) >= limit:
                break
            records += source.plan(skipped)
        return SplitJob(self.split, self.schema, records[:limit], self.build, skipped, self.dropped,
                        self.extra_files)


@dataclass
class _GroupResult:
    group: str
    records: int
    samples: int
    skipped: SkipLog
    dropped: SkipLog
    input: str | None = None
    """A per-source group: its source's fingerprint, so a changed input redoes only its group."""

    def to_json_text(self) -> str:
        obj = {"group": self.group, "records": self.records, "samples": self.samples,
               "skipped": self.skipped.to_json(), "dropped": self.dropped.to_json()}
        if self.input is not None:
            obj["input"] = self.input
        return json.dumps(obj)

    @classmethod
    def from_json_text(cls, text: str) -> _GroupResult:
        obj = json.loads(text)
        return cls(obj["group"], obj["records"], obj["samples"],
                   SkipLog.from_json(obj["skipped"]), SkipLog.from_json(obj["dropped"]), obj.get("input"))


@dataclass
class _GroupTask:
    dest: Destination
    group: str
    records: list[Any]
    build: BuildFn
    schema: Schema
    compression: str | None
    shard_size: int | str
    source: Any = None
    """A per-source group: the worker plans its records from this (``records`` is empty)."""


def group_names(num_records: int, group_size: int) -> list[str]:
    return [f"{i:05d}" for i in range(max(1, -(-num_records // group_size)))]


def _describe(record: Any, error: Exception) -> str:
    record_id = getattr(record, "record_id", repr(record)[:80])
    detail = getattr(error, "detail", "") if isinstance(error, SkipRecord) else f"{type(error).__name__}: {error}"
    return f"{record_id} ({detail[:120]})" if detail else str(record_id)


@contextlib.contextmanager
def _group_records(task: _GroupTask, skipped: SkipLog) -> Iterator[list[Any]]:
    """The group's records; a per-source group plans them here, in the worker (never in the driver),
    and releases its source when the group ends, written or failed (e.g. the local copy of a tar
    read from a store: a failed Spark task must not leave it in the executor's temp folder)."""
    if task.source is None:
        yield task.records
        return
    try:
        yield task.source.plan(skipped)
    finally:
        if hasattr(task.source, "release"):
            task.source.release()


def _write_group(task: _GroupTask, progress: Callable[[int], None]) -> _GroupResult:
    """Write one group's shards and index, publish them, then mark the group done."""
    from streaming import MDSWriter  # streaming imports torch: loaded when writing, not at --help

    local = task.dest.stage_dir(task.group)
    if os.path.exists(local):
        shutil.rmtree(local)  # leftovers of a killed run's staging copy
    delay = float(os.environ.get(RECORD_DELAY_ENV, "0") or 0)
    context = SampleContext()
    skipped = SkipLog()
    samples = 0
    with (_group_records(task, skipped) as records,
          MDSWriter(out=local, columns=dict(task.schema.columns), compression=task.compression,
                    hashes=["xxh64"], size_limit=task.shard_size) as writer):
        left_out = skipped.total
        for record in records:
            if delay:
                time.sleep(delay)
            try:
                built = task.build(record, context)
            except SkipRecord as e:
                skipped.add(e.reason, _describe(record, e), detail=e.detail if e.count_detail else None)
                built = []
            except Exception as e:  # a record we did not foresee: counted, never fatal
                skipped.add("unexpected_error", _describe(record, e))
                built = []
            built = built if isinstance(built, list) else [built]
            for sample in built:
                task.schema.validate(sample)  # a mismatch is a converter bug: fatal
                writer.write(sample)
            samples += len(built)
            context.end_record(written=bool(built))
            progress(1)
    task.dest.publish_dir(task.group)
    skipped.merge(context.skipped)
    result = _GroupResult(task.group, len(records) + left_out, samples, skipped, context.dropped,
                          task.source.fingerprint if task.source is not None else None)
    task.dest.write_text(f"{task.group}/{GROUP_DONE_NAME}", result.to_json_text())
    return result


class Progress:
    """The split's bar: in records (with groups done as a postfix), or, for a per-source job
    whose records are not known up front, in groups (with the records written so far)."""

    def __init__(self, bar: tqdm, per_group: bool, groups: int, groups_before: int) -> None:
        self.bar, self.per_group, self.groups = bar, per_group, groups
        self.groups_before, self.groups_now, self.records_now = groups_before, 0, 0

    def update(self, n: int) -> None:
        """``n`` more records done."""
        self.records_now += n
        if self.per_group:
            self.bar.set_postfix_str(f"{self.records_now} records", refresh=False)
        else:
            self.bar.update(n)

    def set_groups(self, done: int) -> None:
        """``done`` groups finished in this run."""
        if self.per_group:
            self.bar.update(done - self.groups_now)
        else:
            self.bar.set_postfix_str(f"groups {self.groups_before + done}/{self.groups}", refresh=False)
        self.groups_now = done


_progress_queue: Any = None


def _init_worker(queue: Any) -> None:
    global _progress_queue
    _progress_queue = queue


def _write_group_in_worker(task: _GroupTask) -> _GroupResult:
    pending = 0
    last = time.monotonic()

    def progress(n: int) -> None:
        nonlocal pending, last
        pending += n
        if time.monotonic() - last > 0.2:
            _progress_queue.put(pending)
            pending, last = 0, time.monotonic()

    result = _write_group(task, progress)
    _progress_queue.put(pending)
    return result


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork: workers start instantly (spawn would re-import torch/streaming per worker).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _run_groups(tasks: list[_GroupTask], num_workers: int, bar: Progress) -> list[_GroupResult]:
    if num_workers <= 1 or len(tasks) <= 1:
        serial = []
        for t in tasks:
            serial.append(_write_group(t, bar.update))
            bar.set_groups(len(serial))
        return serial
    ctx = _mp_context()
    queue = ctx.Queue()
    results: dict[str, _GroupResult] = {}
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(num_workers, len(tasks)), mp_context=ctx,
        initializer=_init_worker, initargs=(queue,),
    ) as pool:
        futures = {pool.submit(_write_group_in_worker, t): t.group for t in tasks}
        waiting = set(futures)
        try:
            while waiting:
                done, waiting = concurrent.futures.wait(
                    waiting, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    results[futures[future]] = future.result()
                bar.set_groups(len(results))
                while not queue.empty():
                    bar.update(queue.get())
        except BrokenProcessPool as e:
            raise ConversionError(
                f"a worker process died ({e}); finished groups are kept: run the same command "
                "again to resume") from None
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    while not queue.empty():
        bar.update(queue.get())
    return [results[t.group] for t in tasks]


def _run_engine(tasks: list[_GroupTask], options: WriterOptions, bar: Progress) -> list[_GroupResult]:
    """The same groups on either engine; the results in the order of ``tasks``."""
    if options.engine == "spark":
        from data_prep.spark_engine import run_groups

        return run_groups(tasks, _write_group, _GroupResult.from_json_text, options.num_workers,
                          options.spark_master, bar)
    if options.engine != "local":
        raise ConversionError(f"unknown engine {options.engine!r}: use local or spark")
    return _run_groups(tasks, options.num_workers, bar)


def _records_digest(records: Sequence[Any]) -> str:
    """A digest of every record's full content (frozen dataclasses have a stable repr),
    so edited annotations are caught even when the ids stay the same."""
    h = hashlib.sha1()
    for r in records:
        h.update(repr(r).encode("utf-8", "replace") + b"\n")
    return h.hexdigest()


def _manifest(tool: str, args: Mapping[str, Any], job: SplitJob, options: WriterOptions) -> dict[str, Any]:
    manifest = {"version": MANIFEST_VERSION, "tool": tool, "split": job.split, "schema": job.schema.name,
                "args": dict(args), "writer": options.settings()}
    if job.sources is None:
        manifest.update({"records": len(job.records), "records_sha1": _records_digest(job.records)})
    else:
        # Which inputs, in which order; their contents are checked per group (``_GroupResult.input``).
        manifest.update({"inputs": len(job.sources), "inputs_sha1": _records_digest([s.name for s in job.sources])})
    return manifest


def _manifest_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{d}" for d in _manifest_differences(a, b)]
        elif a != b:
            diffs.append(f"{key} ({a!r} -> {b!r})" if not key.endswith("_sha1")
                         else "input records" if key == "records_sha1" else "input files")
    return diffs


def _existing_state(dest: Destination, manifest: dict[str, Any]) -> str:
    """'fresh', 'resume' or 'complete'; raises when the folder holds something else."""
    text = dest.read_text(MANIFEST_NAME)
    if text is None:
        if dest.is_empty():
            return "fresh"
        raise ConversionError(
            f"{dest.url} is not empty and was not written by data_prep (no {MANIFEST_NAME}); "
            "pass --overwrite to delete its contents and convert again, or choose another --out")
    try:
        old = json.loads(text)
    except json.JSONDecodeError:
        old = {}
    diffs = _manifest_differences(old, manifest)
    if diffs:
        raise ConversionError(
            f"{dest.url} holds a conversion made with different settings or inputs "
            f"(differs in: {'; '.join(diffs)}); pass --overwrite to delete it and convert again, "
            "or choose another --out")
    return "complete" if dest.read_text(REPORT_NAME) is not None else "resume"


def _merge_index(dest: Destination, groups: list[str]) -> None:
    from streaming.base.util import merge_index

    urls = [dest.index_url(f"{g}/index.json") for g in groups]
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # merge_index warns about its temp folders on the root logger
    try:
        merge_index(urls, dest.merge_out())
        dest.publish_file("index.json")  # remote: uploaded last, after every group
    finally:
        logging.disable(previous)


def _groups_of(job: SplitJob, options: WriterOptions) -> list[str]:
    if job.sources is not None:
        return [f"{i:05d}" for i in range(len(job.sources))]
    return group_names(len(job.records), options.group_size)


def _changed_groups(dest: Destination, job: SplitJob) -> list[str]:
    """The groups of a finished per-source split whose input file changed since."""
    changed = []
    for g, source in zip(_groups_of(job, WriterOptions()), job.sources or []):
        text = dest.read_text(f"{g}/{GROUP_DONE_NAME}")
        if text is None or _GroupResult.from_json_text(text).input != source.fingerprint:
            changed.append(g)
    return changed


def _write_split(dest: Destination, job: SplitJob, manifest: dict[str, Any], state: str,
                 options: WriterOptions) -> SplitReport:
    start = time.monotonic()
    if state == "complete" and job.sources is not None and _changed_groups(dest, job):
        state = "resume"  # an input file changed since: its group is written again
        dest.delete(REPORT_NAME)  # the split no longer looks complete while it is rewritten
        dest.delete("index.json")
    if state == "complete":
        report = SplitReport.from_json(json.loads(dest.read_text(REPORT_NAME) or "{}"))
        report.already_complete = True
        return report
    dest.write_text(MANIFEST_NAME, json.dumps(manifest, indent=1))
    per_source = job.sources is not None
    groups = _groups_of(job, options)
    finished: dict[str, _GroupResult] = {}
    if state == "resume":
        dest.delete(SPARK_RUN_MARKER)  # left by a Spark driver that was killed
        for i, g in enumerate(groups):
            text = dest.read_text(f"{g}/{GROUP_DONE_NAME}")
            result = _GroupResult.from_json_text(text) if text is not None else None
            if result is not None and (not per_source or result.input == job.sources[i].fingerprint):
                finished[g] = result
            else:
                dest.delete(g)
    size = options.group_size
    tasks = [
        _GroupTask(dest, g, [], job.build, job.schema, options.compression, options.shard_size, job.sources[i])
        if job.sources is not None else
        _GroupTask(dest, g, job.records[i * size:(i + 1) * size], job.build, job.schema,
                   options.compression, options.shard_size)
        for i, g in enumerate(groups) if g not in finished
    ]
    done_records = sum(r.records for r in finished.values())
    total, initial, unit = (len(groups), len(finished), "group") if per_source else \
        (len(job.records), done_records, "rec")
    with tqdm(total=total, initial=initial, desc=job.split or "dataset",
              unit=unit, disable=not options.show_progress, file=sys.stderr) as bar:
        progress = Progress(bar, per_source, len(groups), len(finished))
        for result in _run_engine(tasks, options, progress):
            finished[result.group] = result
    _merge_index(dest, groups)
    for name, text in job.extra_files.items():
        dest.write_text(name, text)

    report = SplitReport(split=job.split, schema=job.schema.name, location=dest.url,
                         records=sum(r.records for r in finished.values()) + job.skipped.total,
                         groups=len(groups),
                         groups_resumed=len(groups) - len(tasks) if state == "resume" else 0)
    report.skipped.merge(job.skipped)
    report.dropped.merge(job.dropped)
    for g in groups:
        result = finished[g]
        report.samples_written += result.samples
        report.skipped.merge(result.skipped)
        report.dropped.merge(result.dropped)
    report.elapsed_s = round(time.monotonic() - start, 3)
    dest.write_text(REPORT_NAME, report.to_json_text())
    dest.discard_staging()
    return report


def write_dataset(
    out: str,
    jobs: Sequence[SplitJob],
    options: WriterOptions,
    tool: str,
    args: Mapping[str, Any],
    extra_files: Mapping[str, str] | None = None,
) -> list[SplitReport]:
    """Write every split of one dataset under ``out`` (``out/<split>/``, or ``out`` itself
    for a job with an empty split name) and print a summary.

    All splits are checked before anything is written, so a refusal leaves
    the destination untouched. ``extra_files`` are written at ``out``.
    """
    start = time.monotonic()
    engine_scope: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if options.engine == "spark":
        from data_prep.spark_engine import conversion_scope, require_spark

        require_spark()  # before anything is written
        engine_scope = conversion_scope()  # one Spark session for all splits
    import streaming  # noqa: F401  (once here, before the workers fork, not in each of them)

    root = open_destination(out, options.staging_dir)
    if options.limit is not None:
        jobs = [j.with_records_planned(options.limit) for j in jobs]
    plan = []
    for job in jobs:
        dest = root.child(job.split) if job.split else root
        manifest = _manifest(tool, args, job, options)
        state = "fresh" if options.overwrite else _existing_state(dest, manifest)
        plan.append((dest, job, manifest, state))
    if options.overwrite:
        for dest, *_ in plan:
            dest.delete()
    for name, text in (extra_files or {}).items():
        root.write_text(name, text)
    with engine_scope:
        reports = [_write_split(dest, job, manifest, state, options) for dest, job, manifest, state in plan]
    root.discard_staging()
    print(format_summary(reports, time.monotonic() - start), flush=True)
    return reports
