"""Read the analysis figures of a Canary rollout straight from the serving pods' metrics endpoints (no Prometheus
needed): the stable pods' mirror counters and latency, the candidate pods' answers and latency.

Every read is bounded: a connect and a read timeout per pod, at most ``MAX_METRICS_BYTES`` per answer, and a
deadline for all pods together; a pod that cannot be read is named in the samples, not an error.

Labels are no proof of whose a pod is: they say whose a pod claims to be, and anyone who can create a pod
in the namespace can label one as the candidate (and answer /metrics with the figures that decide the rollout).
A pod of a revision is read when the Deployment that runs that revision made it (``Makers``): its controller
reference names that Deployment's ReplicaSet (``podhealth.of_deployment``), and gives the uid of the ReplicaSet of
that name, which that Deployment controls (the pods reach ``read_pods`` vouched for: ``replicasets``). This
narrows, and does not close, what a forged pod can do (the mirrored answers through the candidate's Service,
Prometheus' label selection, a pod whose reference gives the live ReplicaSet's uid: docs/security.md).
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from ..resources.meta import COMPONENT_LABEL, MODELDEPLOYMENT_LABEL, REVISION_LABEL
from .canary import EMPTY, Histogram, Samples
from .conditions import parse_rfc3339
from .phasewindow import MAX_PODS, PodFigures, PodReading, Readings
from .podhealth import NAME_LIMIT, of_deployment, printable

log = logging.getLogger("modelship.podmetrics")

MAX_METRICS_BYTES = 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 2.0
DEADLINE_SECONDS = 8.0
REFUSED_NAMED = 5
"""At most this many refused pods are named in the log line of a read."""
COVERAGE_NAMED = 3
"""At most this many pods of each kind (unreadable, refused) are named in the rollout's message (``coverage``)."""
INFERENCE = ("v1", "v2")
"""The protocols of inference requests (the server's requests counter also counts health and metadata)."""


def serving_pods_selector(name: str) -> str:
    return f"{MODELDEPLOYMENT_LABEL}={name},{COMPONENT_LABEL}=server"


def parse(text: str, candidate: str) -> PodFigures:
    """A model server's Prometheus text, reduced to the figures the analysis reads."""
    out = PodFigures()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if s.name == "modelship_mirror_requests_total" and labels.get("candidate") == candidate:
                outcome = labels.get("outcome")
                if outcome == "compared":
                    out.mirrored += s.value
                elif outcome == "failed":
                    out.mirror_failures += s.value
            elif s.name == "modelship_mirror_rows_total" and labels.get("candidate") == candidate:
                if labels.get("result") == "agree":
                    out.rows_agreed += s.value
                else:
                    out.rows_disagreed += s.value
            elif s.name == "modelship_request_duration_seconds_count" and labels.get("model"):
                out.requests += s.value  # inference requests answered, whatever the answer
            elif s.name == "modelship_requests_total" and labels.get("model") and labels.get("protocol") in INFERENCE:
                code = int(labels.get("code") or 0)
                if code >= 500 or code == 429:
                    out.errors += s.value
            elif s.name == "modelship_request_duration_seconds_bucket" and labels.get("model"):
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    if buckets:
        bounds = tuple(sorted(buckets))
        out.latency = Histogram(bounds, tuple(buckets[b] for b in bounds))
    return out


Fetch = Callable[[dict[str, Any], int], str]
"""(pod, metrics port) -> the pod's /metrics text; raises OSError when it cannot be read."""


class MetricsUnreadable(OSError):
    """A pod's /metrics could not be read, for a reason the operator words itself (``reason``: never the pod's
    text); the exception's message may carry more (for the operator's log)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def fetch_pod(pod: dict[str, Any], port: int) -> str:
    """GET http://<pod IP>:<port>/metrics with bounded time and size."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise MetricsUnreadable("no pod IP yet", "no pod IP")
    conn = http.client.HTTPConnection(ip, port, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(READ_TIMEOUT_SECONDS)
        conn.request("GET", "/metrics", headers={"Accept": "text/plain"})
        resp = conn.getresponse()
        body = resp.read(MAX_METRICS_BYTES + 1)
        if resp.status != 200:
            raise MetricsUnreadable(f"/metrics answered {resp.status}", f"answered {int(resp.status)}")
        if len(body) > MAX_METRICS_BYTES:
            raise MetricsUnreadable(f"/metrics is larger than {MAX_METRICS_BYTES} bytes", "answer too large")
        return body.decode("utf-8", errors="replace")
    except http.client.HTTPException as e:
        raise MetricsUnreadable(f"{type(e).__name__}: {e}", "not an HTTP answer") from e
    finally:
        conn.close()


DEADLINE = "deadline"
"""The reason of a pod not read because the read's deadline for all pods had passed."""


def unreadable_reason(error: Exception) -> str:
    """Why a pod's /metrics could not be read, in the operator's own words (a few fixed ones): what the figures
    (``Readings.unreadable``, ``Samples.unreadable``) may carry of it. The exception's text is not: an unparsable
    answer's error quotes the pod's text."""
    if isinstance(error, MetricsUnreadable):
        return error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionError):
        return "connection failed"
    if isinstance(error, ValueError):
        return "unparsable metrics"
    return "unreachable"


class Makers(NamedTuple):
    """The Deployments (names) whose pods a read accepts, each for the revision it runs while a rollout is
    analysed: the Canary's candidate Deployment for the candidate, the serving Deployment for the stable (the
    serving Deployment runs the candidate only once it is promoted, when nothing is analysed). None: no Deployment
    of the ModelDeployment's (controlled by its uid: the caller checks) runs it, and no pod of it is read."""

    candidate: str | None
    stable: str | None


NOBODY = Makers(None, None)
"""No Deployment of the ModelDeployment's runs either revision: no pod is read."""


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def read_pods(
    pods: Iterable[dict[str, Any]],
    port: int,
    candidate: str,
    stable: str,
    fetch: Fetch = fetch_pod,
    *,
    makers: Makers,
) -> Readings:
    """The figures of each ready serving pod of the candidate or the stable revision that the Deployment running
    its revision made (``makers``; cumulative since its server started; controller.phasewindow turns them into
    the phase's increase). A pod labelled so but made by anything else is refused: not read, named in
    ``Readings.refused`` (and a debug line; ``RefusedPods`` says it at info level when the set changes). A pod
    whose /metrics cannot be read is named in ``Readings.unreadable`` with the operator's words for why
    (``unreadable_reason``), the error's own text in the operator's log."""
    read: list[PodReading] = []
    unreadable: list[tuple[str, str]] = []  # (pod, the operator's words for why: unreadable_reason)
    told: list[str] = []  # (pod: the error's own text), for the operator's log only
    refused: list[str] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    for pod in pods:
        meta = pod.get("metadata") or {}
        rev = (meta.get("labels") or {}).get(REVISION_LABEL)
        if rev not in (candidate, stable) or not _ready(pod):
            continue
        name = str(meta.get("name") or "")
        maker = makers.candidate if rev == candidate else makers.stable
        if maker is None or not of_deployment(pod, maker):
            refused.append(name)
            continue
        if time.monotonic() > deadline:
            unreadable.append((name, DEADLINE))
            told.append(f"{name}: not read (deadline)")
            continue
        try:
            figs = parse(fetch(pod, port), candidate)
        except (OSError, ValueError) as e:
            unreadable.append((name, unreadable_reason(e)))
            told.append(f"{name}: {e}")
            continue
        read.append(PodReading(name, rev == candidate, parse_rfc3339(meta.get("creationTimestamp")), figs))
    if told:
        log.info("metrics of %d pod(s) unreadable: %s", len(told), "; ".join(told)[:500])
    if refused:  # said at info level by RefusedPods, once until the set changes
        log.debug("%s", refused_line(refused, candidate, stable))
    return Readings(tuple(read), tuple(unreadable), tuple(sorted(refused)))


def refused_line(refused: Iterable[str], candidate: str, stable: str) -> str:
    names = sorted(refused)
    return (f"{len(names)} pod(s) labelled as revision {candidate[:64]} or {stable[:64]} not read: not made by the "
            f"Deployment that runs it: {', '.join(n[:64] for n in names[:REFUSED_NAMED])}"
            f"{', ...' if len(names) > REFUSED_NAMED else ''}")  # fmt: skip


def coverage(readings: Readings | None) -> str:
    """What the analysis' figures left out at this look, for the rollout's message (after it): "" when they are
    Prometheus' (None) or every ready pod of the revisions under analysis was read and counted; else how many of
    the pods looked at the figures count, the unreadable ones, the refused ones (labelled as a revision under
    analysis, not made by the Deployment running it) and those read beyond the ``MAX_PODS`` a phase's window
    follows (not counted: ``phasewindow.samples``).

    Bounded and stable from look to look, so a status is not written again for nothing: counts, at most
    ``COVERAGE_NAMED`` names of each kind (sorted, each cut to ``NAME_LIMIT``), never a pod's text. An unreadable
    pod is named without why: the reason varies from look to look for one pod that stays unreadable (timed out at
    one look, cut by the read's deadline at the next when another pod was slow, connection refused while it
    restarts), and each look's reason is in the operator's log. A pod read at one look and not at the next still
    changes the words (nothing here remembers looks)."""
    if readings is None:
        return ""
    counted = min(len(readings.pods), MAX_PODS)
    beyond = len(readings.pods) - counted
    if not (readings.unreadable or readings.refused or beyond):
        return ""
    looked = len(readings.pods) + len(readings.unreadable) + len(readings.refused)
    parts = []
    if readings.unreadable:
        unread = sorted(printable(p, NAME_LIMIT) for p, _why in readings.unreadable)
        parts.append(f"{len(unread)} unreadable (why: the operator's log): {_first(unread)}")
    if readings.refused:
        refused = sorted(printable(p, NAME_LIMIT) for p in readings.refused)
        parts.append(f"{len(refused)} refused, not made by the Deployment running their revision: {_first(refused)}")
    if beyond:
        parts.append(f"{beyond} read but not counted, past the {MAX_PODS} pods a phase's window follows")
    return f"; figures from {counted} of {looked} pods ({'; '.join(parts)})"


def _first(names: list[str]) -> str:
    more = len(names) - COVERAGE_NAMED
    return ", ".join(names[:COVERAGE_NAMED]) + (f" and {more} more" if more > 0 else "")


class RefusedPods:
    """Says a ModelDeployment's refused pods (``Readings.refused``) at info level once, until the set changes: a
    forged pod that stands is not one line per look (every 5 s) in the operator's log."""

    def __init__(self) -> None:
        self._said: dict[tuple[str, str], frozenset[str]] = {}

    def tell(self, where: tuple[str, str], refused: Iterable[str], candidate: str, stable: str) -> None:
        names = frozenset(refused)
        if names == self._said.get(where, frozenset()):
            return
        if names:
            self._said[where] = names
            log.info("%s/%s: %s", *where, refused_line(names, candidate, stable))
        else:
            self._said.pop(where, None)

    def forget(self, namespace: str, name: str) -> None:
        self._said.pop((namespace, name), None)


def read_samples(
    pods: Iterable[dict[str, Any]], port: int, candidate: str, stable: str, fetch: Fetch = fetch_pod, *, makers: Makers
) -> Samples:
    """The pods' figures summed over their lifetime (what a Prometheus sum() of the raw counters says)."""
    return lifetime(read_pods(pods, port, candidate, stable, fetch, makers=makers))


def lifetime(readings: Readings) -> Samples:
    stable_figs = [r.figures for r in readings.pods if not r.candidate]
    cand_figs = [r.figures for r in readings.pods if r.candidate]
    stable_latency, cand_latency = EMPTY, EMPTY
    for f in stable_figs:
        stable_latency = _add(stable_latency, f.latency)
    for f in cand_figs:
        cand_latency = _add(cand_latency, f.latency)
    return Samples(
        mirrored=int(sum(f.mirrored for f in stable_figs)),
        rows_agreed=int(sum(f.rows_agreed for f in stable_figs)),
        rows_compared=int(sum(f.rows_agreed + f.rows_disagreed for f in stable_figs)),
        mirror_failures=int(sum(f.mirror_failures for f in stable_figs)),
        candidate_requests=int(sum(f.requests for f in cand_figs)),
        candidate_errors=int(sum(f.errors for f in cand_figs)),
        candidate_latency=cand_latency,
        stable_latency=stable_latency,
        pods=len(readings.pods),
        unreadable=tuple(f"{p}: {why}" for p, why in readings.unreadable),
    )


def _add(a: Histogram, b: Histogram) -> Histogram:
    try:
        return a + b
    except ValueError:  # another server version with other buckets: keep what is comparable
        return a
