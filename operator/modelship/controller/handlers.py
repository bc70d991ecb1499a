"""kopf wiring: watch streams feed the store and the work queue; nothing here decides anything.

Only ``on.event`` handlers are used: they store nothing on the watched objects (no annotations, no
finalizers), so Git stays the only writer of a ModelDeployment's spec and metadata, and a stopped operator
never blocks a deletion. Periodic resync is a background task, not a per-object timer, for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ..config import OperatorConfig
from ..resources.kinds import CHILDREN, MODELDEPLOYMENT, Selector
from . import metrics
from .kube import EventPoster, Kube, api_client, transient
from .reconcile import MD, Reconciler
from .store import Store
from .workqueue import WorkQueue

log = logging.getLogger("modelship.operator")


class _State:
    store = Store()
    reconciler: Reconciler | None = None
    queue: WorkQueue | None = None
    workers = 4
    namespaced = False
    resync_task: asyncio.Task[None] | None = None
    stop: asyncio.Event | None = None
    """The stop flag of the running kopf.operator (controller/cli.py): kopf waits on it in a task of its own."""


def _plain(body: Any) -> dict[str, Any]:
    return {k: body[k] for k in body}


def _key(body: Any) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def _feed(kind: str, event: kopf.RawEvent, body: kopf.Body) -> None:
    meta = body["metadata"]
    if event.get("type") == "DELETED":
        _State.store.remove(kind, meta.get("namespace") or "", meta["name"])
    else:
        _State.store.put(kind, _plain(body))
    owner = _State.store.owner(_plain(body))
    log.debug("%s %s/%s rv %s -> %s", event.get("type"), kind, meta["name"], meta.get("resourceVersion"), owner)
    if owner and _State.queue is not None:
        _State.queue.add(owner)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    settings.peering.standalone = True  # one replica, strategy Recreate: no peering objects or RBAC for them
    settings.posting.level = logging.WARNING  # our own Events carry the stage story
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 360
    settings.watching.connect_timeout = 30
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    if _State.namespaced:
        # the namespaced chart grants Roles only: do not list namespaces and CRDs cluster-wide
        settings.scanning.disabled = True
    settings.execution.max_workers = 8
    cfg = OperatorConfig.from_env()
    if _State.queue is not None:  # a restart of the watches (controller/cli.py): kopf ran no cleanup
        _State.queue.stop()
    _State.store = Store(cfg.build_namespace)  # the new watches list everything again
    kube = Kube(api_client(_State.workers + 4))  # every worker and the event poster keep their connection
    _State.reconciler = Reconciler(kube, _State.store, cfg, EventPoster(kube))
    reconciler = _State.reconciler

    def handle(key: tuple[str, str]) -> float | None:
        metrics.QUEUE_DEPTH.set(_State.queue.depth() if _State.queue else 0)
        return reconciler.reconcile(*key)

    def give_up(key: tuple[str, str], error: Exception, tries: int) -> None:
        reconciler.give_up(*key, error, tries)

    _State.queue = WorkQueue(handle, workers=_State.workers, give_up=give_up, transient=transient)
    _State.queue.start()
    _State.resync_task = asyncio.get_running_loop().create_task(_resync(cfg.resync_seconds))
    logger.info("modelship operator started (%d workers, resync every %ss)", _State.workers, cfg.resync_seconds)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _State.queue is not None:
        _State.queue.stop()
    if _State.resync_task is not None:  # else kopf waits 5 s for it as a hung task before it stops or restarts
        _State.resync_task.cancel()
    if _State.stop is not None:
        # kopf stopped on a signal: its task waiting on the stop flag would be left pending, and kopf waits 5 s for
        # it as a hung task before the process exits (every SIGTERM, so every pod replaced, took 5 s longer)
        _State.stop.set()


async def _resync(period: float) -> None:
    await _check_served_crd()  # at once, not in the way of startup
    while True:
        await asyncio.sleep(period)
        if _State.queue is None:
            continue
        keys = _State.store.keys(MD)
        log.debug("resync: %d ModelDeployments", len(keys))
        for _kind, ns, name in keys:
            _State.queue.add((ns, name))
        if _State.reconciler is not None:  # build Jobs whose ModelDeployment went while the operator was away
            for owner in _State.reconciler.orphaned_builds():
                _State.queue.add(owner)
        await _check_served_crd()
        counts = _State.reconciler.phase_counts() if _State.reconciler else {}
        metrics.PHASES.clear()
        for phase, n in counts.items():
            metrics.PHASES.labels(phase).set(n)


async def _check_served_crd() -> None:
    """The served CRD against this operator's models (version skew, both ways): never fatal."""
    if _State.reconciler is None:
        return
    try:
        await asyncio.to_thread(_State.reconciler.status_writer.check_served_crd)
    except Exception:  # an API hiccup: the next resync reads it again
        log.warning("could not compare the served ModelDeployment CRD with this operator's", exc_info=True)


@kopf.on.event(MODELDEPLOYMENT.group, MODELDEPLOYMENT.version, MODELDEPLOYMENT.plural)
async def modeldeployment_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    meta = body["metadata"]
    if event.get("type") == "DELETED":
        _State.store.remove(MD, meta["namespace"], meta["name"])
        if _State.queue is not None:
            _State.queue.add(_key(body))  # its build Jobs in the build namespace are the operator's to delete
        return
    new = _plain(body)
    old = _State.store.get(MD, meta["namespace"], meta["name"])
    _State.store.put(MD, new)
    if _State.queue is not None and (old is None or _intent(old) != _intent(new)):
        # only what the user (or Git) changed needs a reconcile; our own status writes do not
        _State.queue.add(_key(body))


def _intent(body: dict[str, Any]) -> tuple[Any, ...]:
    meta = body.get("metadata") or {}
    return (body.get("spec"), meta.get("generation"), meta.get("deletionTimestamp"), meta.get("labels"))


def _selector(watch: Selector) -> dict[str, Any]:
    return {label: kopf.PRESENT if value is None else value for label, value in watch.items()}


def _child_handler(kind: str) -> Any:
    async def handler(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        _feed(kind, event, body)

    handler.__name__ = handler.__qualname__ = f"{kind.lower()}_event"
    return handler


# Every watched child kind of the table (the owned children: Jobs, their pods, the serving objects): each change
# is mirrored in the store and wakes the owner's reconcile.
for _child in CHILDREN:
    assert _child.watch is not None
    kopf.on.event(_child.group, _child.version, _child.plural, labels=_selector(_child.watch),
                  id=f"{_child.kind.lower()}_event")(_child_handler(_child.kind))  # fmt: skip
