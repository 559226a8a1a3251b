"""A submitted task afterwards: look it up, run it again, delete it, send its recording back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import PurePath

import redis
from anyio import to_thread
from rq.exceptions import NoSuchJobError
from rq.job import Job

from src.config import Settings
from src.queue import job_queue
from src.queue.job_queue import Lanes
from src.records import task_store
from src.results import history
from src.service.errors import RecordingGone, RecordingNotFound, TaskNotFailed, TaskNotFound
from src.service.models import Deleted, Queued, Recording, TaskView
from src.service.push import EventHub, until_settled
from src.service.submit import queued_answer, standing
from src.uploads import recordings
from src.vocabulary import TaskStatus


def view(conn: redis.Redis, lanes: Lanes, task_id: str) -> TaskView:
    """The task's record, and its position (and wait) while it waits or runs (see `standing`)."""
    record = task_store.load(conn, task_id)
    if record is None:
        raise TaskNotFound(task_id=task_id)
    # While it waits, its place and its wait estimate's figures are read in one round trip.
    seen = job_queue.outlook(conn, lanes, task_id) if record.status == TaskStatus.QUEUED else None
    status, position, where = standing(record.status, seen.place if seen else None)
    if status != record.status:  # a worker has it and has not marked the record yet
        record = record.model_copy(update={"status": status})
    if seen is None or where is None:
        return TaskView(record=record, position=position)
    wait = seen.wait(record.audio_duration)
    return TaskView(record=record, position=position, estimated_wait=wait, lane=where.lane)


async def view_settled(
    hub: EventHub, conn: redis.Redis, lanes: Lanes, task_id: str, timeout_s: float
) -> TaskView:
    """The long poll: the view once the task is done or failed, or after `timeout_s` as it is
    then. No thread and no Redis read while it waits; the hub wakes it on the task's events."""

    async def read() -> TaskView:
        return await to_thread.run_sync(view, conn, lanes, task_id)

    if timeout_s <= 0:
        return await read()
    with hub.watch(task_id) as watch:
        return await until_settled(watch, read, lambda v: v.settled, timeout_s)


async def follow(
    hub: EventHub, conn: redis.Redis, lanes: Lanes, task_id: str
) -> AsyncIterator[TaskView]:
    """The task's view now, then again each time it changes (its place in line included),
    ending with done or failed. Raises `TaskNotFound` if it is (or becomes) unknown."""
    with hub.watch(task_id, queue_moves=True) as watch:
        last: TaskView | None = None
        while True:
            current = await to_thread.run_sync(view, conn, lanes, task_id)
            if current != last:
                yield current
                last = current
            if current.settled:
                return
            await watch.wait(None)  # rung by the task's events or a queue move


def retry(conn: redis.Redis, lanes: Lanes, settings: Settings, task_id: str) -> Queued:
    record = task_store.load(conn, task_id)
    if record is None:
        raise TaskNotFound(task_id=task_id)
    if record.status != TaskStatus.FAILED:
        raise TaskNotFailed(task_id=task_id, status=record.status.value)
    if recordings.recording_path(settings, record.file) is None:
        raise RecordingGone(task_id=task_id)
    with contextlib.suppress(NoSuchJobError):
        Job.fetch(task_id, connection=conn).delete()
    fresh = record.model_copy(
        update={
            "status": TaskStatus.QUEUED,
            "progress": 0,
            "stage": None,
            "error": None,
            "started_at": None,
            "finished_at": None,
            "text": None,
        }
    )
    with conn.pipeline() as pipe:  # one transaction, as at submit: never queued without a job
        pipe.multi()
        task_store.save(pipe, fresh)  # no TTL while it waits again
        recordings.pin(pipe, record.file)
        job_queue.enqueue_task(lanes[record.priority], task_id, settings, pipe)
        pipe.execute()
    return queued_answer(conn, lanes, task_id, record.audio_duration)


def delete(conn: redis.Redis, settings: Settings, task_id: str) -> Deleted:
    """Remove the task, its queued job, its recording and its index and history entries."""
    record = task_store.load(conn, task_id)
    name = record.file if record else recordings.find_in_index(conn, task_id)
    if record is None and name is None:
        raise TaskNotFound(task_id=task_id)
    with contextlib.suppress(NoSuchJobError):
        Job.fetch(task_id, connection=conn).delete()  # also takes it off the queue
    task_store.delete(conn, task_id)
    history.remove(conn, task_id)
    removed = recordings.delete_recording(conn, settings, name) if name else False
    return Deleted(task_id=task_id, recording_deleted=removed)


def find_audio(conn: redis.Redis, settings: Settings, task_id: str) -> Recording:
    """(path, download name) of a task's original recording, only from the recordings dir.

    A task answered from the result cache keeps no copy of its upload: its bytes are those of
    the task whose transcript it carries, and that task's recording is served while it is kept
    (retention or a delete of that task ends it; then 404)."""
    record = task_store.load(conn, task_id)
    name = record.file if record else recordings.find_in_index(conn, task_id)
    if record is not None and record.cached_from and not name:
        name = _recording_name(conn, record.cached_from)
    path = recordings.recording_path(settings, name) if name else None
    if path is None:
        raise RecordingNotFound(task_id=task_id)
    ext = path.suffix
    download = record.filename if record else path.name
    if not download.lower().endswith(ext.lower()):
        download = f"{PurePath(download).stem or task_id}{ext}"
    return Recording(path=path, download_name=download)


def _recording_name(conn: redis.Redis, task_id: str) -> str | None:
    """A task's stored recording's name, from its record or, once that expired, the index."""
    record = task_store.load(conn, task_id)
    return record.file if record else recordings.find_in_index(conn, task_id)
