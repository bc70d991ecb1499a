"""A Canary candidate whose own pods cannot serve: what they say (``CandidateTrouble``, read by
``stages.pod_causes.candidate_trouble``), the crash loop's own clock (``troubled_for``:
status.rollout.candidateFailingSince), whether the candidate is rolled back for them (``judge_trouble``:
CandidateCrashLoop, CandidateNotStarting) with what the rollback says (``trouble_message``), when such a
rollback is tried again (``rearmed``), and what a look after it makes of a record without its template
(``recorded``). Pure; ``canary.decide`` reads them at each look of an analyzing phase."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from ..api.rollout_status import RollbackCause, RolloutPhase, RolloutStatus
from .conditions import parse_past, parse_rfc3339, rfc3339


@dataclass(frozen=True)
class CandidateTrouble:
    """Why the candidate's pods do not serve, as their pods and their Deployment tell it."""

    text: str
    """What they say (the pods' cause, or the Deployment controller's message), already bounded and on one line."""
    crash_loop: bool = False
    """A container of a pod of theirs that is not Ready crash-loops (``podhealth.crash_looping``: the thresholds
    the stable path uses): the crash loop's clock starts, or runs on."""
    recovering: bool = False
    """Only Ready pods of theirs have a container running again after a crash (``podhealth.crash_looping`` until it
    has run ``RECOVERY_SECONDS``): a crash loop's clock already running is kept (the ready moments of a flap), none
    is started (one restart that then runs is not a loop), and nothing is judged on it."""
    deadline_exceeded: bool = False
    """The candidate's Deployment controller gave up on its newest template (ProgressDeadlineExceeded)."""
    template_hash: str | None = None
    """The pod-template-hash of the ReplicaSet whose pods say it (the Deployment's newest, as its controller names
    it; None when it names none): a crash loop's clock is that ReplicaSet's (candidateFailingTemplate)."""


def troubled_for(state: RolloutStatus, trouble: CandidateTrouble | None, now: datetime) -> tuple[str | None, float]:
    """(candidateFailingSince to write, seconds it has lasted): the crash loop's own clock. Started when the pods
    crash-loop (a forged or future stamp starts anew now), kept while they go on crash-looping or a crashed pod is
    Ready for a moment (``recovering``), cleared when they say nothing or say something else (a pod not scheduled
    or not pulled is judged only by its Deployment's progress deadline, which needs no stamp): a crash after such
    trouble starts a clock of its own. A stamp from before the rollout's start (``startedAt``) starts anew too, and
    so does the clock of another ReplicaSet's pods (``candidateFailingTemplate`` not the pod-template-hash of the
    pods that say it: a ``kubectl rollout restart`` of the candidate's Deployment, or an edit of its template, made
    pods of a new ReplicaSet, which are judged anew; a clock without that record, written before the field or
    pruned by an older CRD, is kept as before it)."""
    if trouble is None or not (trouble.crash_loop or trouble.recovering):
        return None, 0.0
    since = parse_past(state.candidate_failing_since, now)
    began = parse_rfc3339(state.started_at)
    if since is not None and began is not None and since < began:
        since = None  # a stamp from before this rollout began is not this rollout's clock
    timed, judged = state.candidate_failing_template, trouble.template_hash
    if since is not None and timed is not None and judged is not None and timed != judged:
        since = None  # the clock of the pods of another ReplicaSet: these start their own
    if since is None and not trouble.crash_loop:
        return None, 0.0
    since = since or now
    return rfc3339(since), max(0.0, (now - since).total_seconds())


def clock_template(state: RolloutStatus, trouble: CandidateTrouble | None, since: str | None) -> str | None:
    """candidateFailingTemplate to write with ``since`` (``troubled_for``'s): the ReplicaSet whose pods the clock
    times, as the pods that say it name it (kept as recorded while the Deployment's controller names none); None
    with no clock."""
    if since is None:
        return None
    return (trouble.template_hash if trouble is not None else None) or state.candidate_failing_template


def judge_trouble(
    trouble: CandidateTrouble | None, lasted: float, deadline: int, available: bool
) -> RollbackCause | None:
    """Whether the candidate is rolled back for its pods, and why: its Deployment's controller gave up on it
    (ProgressDeadlineExceeded: CandidateCrashLoop when they crash-loop, else CandidateNotStarting), or they have
    crash-looped for ``deadline`` seconds (progressDeadlineSeconds), a pod that is not Ready crash-looping now, and
    are not all available now (one restart that then runs and serves is not a loop; a flap's ready moment does not
    reset the clock). A pod slow to pull or to be scheduled is judged only by the controller's deadline."""
    if trouble is None or available:
        return None
    if trouble.deadline_exceeded:
        return RollbackCause.CANDIDATE_CRASH_LOOP if trouble.crash_loop else RollbackCause.CANDIDATE_NOT_STARTING
    if trouble.crash_loop and lasted >= deadline:
        return RollbackCause.CANDIDATE_CRASH_LOOP
    return None


def unjudged(trouble: CandidateTrouble | None) -> CandidateTrouble | None:
    """``trouble`` as told while the candidate's Deployment runs the template applied but its controller has not
    observed its last change (a count: the status read, and the pods, may lag it): the message names it, a crash
    loop's clock already running is kept (a scale is no new template), none is started and nothing is judged."""
    if trouble is None:
        return None
    return CandidateTrouble(
        trouble.text, recovering=trouble.crash_loop or trouble.recovering, template_hash=trouble.template_hash
    )


RESTART_MARK_MAX = 64
"""The longest rolledBackRestartedAt (its CRD's maxLength)."""
RETRIED_CAUSES = frozenset({RollbackCause.CANDIDATE_CRASH_LOOP, RollbackCause.CANDIDATE_NOT_STARTING})
"""Rollbacks for the candidate's own pods: a fix of the spec that keeps the revision (serving resources, a node
selector) may cure them, so a spec that renders the candidate's pods anew tries the revision again (``rearmed``)."""


def rearmed(state: RolloutStatus | None, candidate: str, template: str | None, restarted: str | None = None) -> bool:
    """The rollback of ``candidate`` for its pods is over: the candidate's pod template the spec renders now
    (``template``, ``resources.canary.candidate_template``) is not the one its judged pods ran (rolledBackTemplate),
    or its Deployment was restarted since (``restarted``, its pod template's restartedAt now, is not the one
    recorded in rolledBackRestartedAt: ``kubectl rollout restart`` after a fix outside the spec), so a new rollout
    of it starts. A re-apply or a scale of the same spec renders the same one: the rollback stands. An analysis
    rollback, an abort, or a record without the template (pruned by an older CRD; ``recorded`` fills it in when the
    judged template can be told) stays final; a record without rolledBackRestartedAt (written before the field, or
    pruned) is not compared on the restart, so a restart made before its rollback does not retry it."""
    if (
        state is None
        or state.candidate != candidate
        or state.phase != RolloutPhase.ROLLED_BACK
        or state.rollback_cause not in RETRIED_CAUSES
        or state.rolled_back_template is None
        or template is None
    ):
        return False
    judged = state.rolled_back_restarted_at
    return template != state.rolled_back_template or (judged is not None and restart_mark(restarted) != judged)


def restart_mark(restarted: str | None) -> str:
    """rolledBackRestartedAt for the candidate pod template's restartedAt ``restarted``: "" for none, the stamp
    itself (``kubectl rollout restart`` writes an RFC 3339 time), or a digest of a value longer than the field
    allows (anybody who may edit the Deployment may write the annotation)."""
    if not restarted:
        return ""
    if len(restarted) <= RESTART_MARK_MAX:
        return restarted
    return "sha256:" + hashlib.sha256(restarted.encode()).hexdigest()[: RESTART_MARK_MAX - len("sha256:")]


_RETRY_BY = (
    "change spec.serving's resources, hardware (nodeSelector, tolerations, runtimeClassName), podAnnotations, "
    "shmSize or serviceAccountName, or spec.serving.rollout.progressDeadlineSeconds, to try the revision again (not "
    "replicas; after a fix outside the spec, such as quota, node capacity or a pull Secret's content, "
)
"""The words RETRY and RETRY_BY_SPEC share: they differ only in how a fix outside the spec is tried."""
RETRY = _RETRY_BY + "run kubectl rollout restart deployment/<name>-canary, the candidate's Deployment)"
"""How a rollback for the candidate's pods is tried again: a change of what ``resources.canary.candidate_template``
digests (the candidate's pod template, its progress deadline), or of the restartedAt ``kubectl rollout restart``
writes on the candidate's Deployment (rolledBackRestartedAt, ``rearmed``). Each field named enters it (a unit test
checks); podAnnotations enters the stable
Deployment's pod template too, so changing it rolls the stable revision's pods, which a restart of the candidate's
Deployment does not."""
RETRY_BY_SPEC = _RETRY_BY + "change an entry of spec.serving.podAnnotations)"
"""RETRY for a record that is not compared on the candidate Deployment's restart (no rolledBackRestartedAt: a
record filled in after a restart that may have come after its rollback, or a CRD that prunes the field), where a
``kubectl rollout restart`` does not try the revision again (``rearmed``): a podAnnotations entry, which enters the
candidate's pod template, does."""
RETRY_BEFORE = RETRY_BY_SPEC
"""RETRY as an earlier operator wrote it (before a restart of the candidate's Deployment tried the revision again):
the same words as RETRY_BY_SPEC, which a record without rolledBackRestartedAt keeps (``retry_told``)."""
FINAL = (
    "this rollback is final for the revision: the installed CRD prunes status.rollout.rolledBackTemplate, the "
    "record a spec change is compared with (once this release's CRD is applied, a later rollback for the "
    "candidate's pods can be tried again by a spec change)"
)
UNTOLD = (
    "this rollback is final for the revision: its record has no status.rollout.rolledBackTemplate (an older CRD "
    "pruned it, or an older operator wrote the record) and the spec may have changed since, so which pod template "
    "the judged pods ran cannot be told"
)
_EARLIER = (
    RETRY_BEFORE,
    "change the candidate's pods in the spec (resources, env, scheduling; not replicas) to try the revision again",
    "this rollback is final for the revision: the installed CRD prunes status.rollout.rolledBackTemplate (apply "
    "this release's CRD for a spec change to try it again)",
)
"""Endings an earlier operator wrote (``retold`` replaces them)."""


def recorded(
    state: RolloutStatus,
    template: str | None,
    generation: int | None,
    pruned: bool,
    restarted: str | None = None,
) -> RolloutStatus:
    """A rollback for the candidate's pods as its record now allows, at a look after it (``state`` RolledBack and
    left so by ``decide``). Its ``rolledBackTemplate`` kept: as it is, but for the message's retry advice, which
    names ``kubectl rollout restart`` only while the record has rolledBackRestartedAt (``retry_told``: a CRD that
    keeps the template may prune that field). Without one (the rollback's own write was
    pruned by an older CRD, or an older operator wrote it), the template is filled in from this pass's render
    (``template``) when this process knows of no pruning of it (``pruned``) and the spec is the one the judged pods
    were judged on (its generation is ``rolledBackGeneration``; what is filled in is this operator's render of that
    spec, which after an operator upgrade or a change of its configuration may differ from the one the pods ran: a
    change of the spec still renders another), and the message says how to retry (RETRY, or RETRY_BY_SPEC when the
    restart is not compared). The candidate Deployment's
    restart (``restarted``, its restartedAt now) is filled in only when it was certainly the judged pods' one: none
    now (then none was judged: a later restart tries the revision again), or one from before the rollout started
    (``startedAt``); a restart after that may have come after the rollback, and is not compared (a later restart
    does not retry such a record either; a spec change does). Else the rollback stays final: a message that already
    says so (FINAL or UNTOLD) is left as it is, whatever this process knows of pruning (a namespaced operator learns
    it only from its own writes: after a restart it may not know what an earlier one wrote FINAL for); one that does
    not is told FINAL when the field is known pruned, else UNTOLD (which template the judged pods ran cannot be
    told; a user's changed template is never recorded as the judged one). Each outcome is one write, which the next
    look leaves as it is, but one: a record filled in by a process that did not know its CRD prunes the field loses
    it in that write and is told FINAL at the next look."""
    if state.phase != RolloutPhase.ROLLED_BACK or state.rollback_cause not in RETRIED_CAUSES:
        return state
    if state.rolled_back_template is not None:
        return retry_told(state)
    if not pruned and template is not None and generation is not None and state.rolled_back_generation == generation:
        update = {"rolled_back_template": template, "rolled_back_restarted_at": _judged_restart(state, restarted)}
        filled = state.model_copy(update=update)
        return filled.model_copy(update={"message": retold(state.message, _retry_ending(filled))})
    if _ending(state.message)[1] in (FINAL, UNTOLD):
        return state  # final already: not reworded by what this process happens to know
    return state.model_copy(update={"message": retold(state.message, FINAL if pruned else UNTOLD)})


def retry_told(state: RolloutStatus) -> RolloutStatus:
    """A rollback record's message whose ending says how it is tried again (RETRY or RETRY_BY_SPEC) as ``rearmed``
    does it: naming ``kubectl rollout restart`` only when the record is compared on the restart (it has
    rolledBackRestartedAt: none when a CRD pruned it, or ``recorded`` could not tell the judged pods' restart)."""
    ending = _ending(state.message)[1]
    wanted = _retry_ending(state)
    if ending not in (RETRY, RETRY_BY_SPEC) or ending == wanted:
        return state
    return state.model_copy(update={"message": retold(state.message, wanted)})


def _retry_ending(state: RolloutStatus) -> str:
    return RETRY if state.rolled_back_restarted_at is not None else RETRY_BY_SPEC


def _judged_restart(state: RolloutStatus, restarted: str | None) -> str | None:
    """rolledBackRestartedAt for a record filled in after its rollback (``recorded``): "" when the candidate's
    Deployment has no restart now, ``restarted`` when it is from before the rollout started (the judged pods ran
    after it), else None (not compared: it may have come after the rollback)."""
    if not restarted:
        return ""
    at, began = parse_rfc3339(restarted), parse_rfc3339(state.started_at)
    return restart_mark(restarted) if at is not None and began is not None and at < began else None


def _ending(message: str) -> tuple[str, str | None]:
    """(``message`` up to its ending on how the revision is tried again, that ending if it is a known one): the
    ending is at the end of the cause part, just before the serving revision's words ("; revision ...") or at the
    end of a message without them; the cause part (the pods' own text) is never searched."""
    head, sep, _ = message.rpartition("; revision ")
    if not sep:
        head = message
    for known in (RETRY, RETRY_BY_SPEC, FINAL, UNTOLD, *_EARLIER):
        if head.endswith(f"; {known}"):
            return head[: -len(known) - 2], known
    return head, None


def retold(message: str, ending: str) -> str:
    """A rollback's ``message`` with its ending on how the revision is tried again, at its place, replaced by
    ``ending`` (added before the serving revision's words when it has none of the known ones there)."""
    _, sep, tail = message.rpartition("; revision ")
    cause, _ = _ending(message)
    return f"{cause}; {ending}{sep}{tail}" if sep else f"{cause}; {ending}"


def with_cause_words(message: str, words: str) -> str:
    """A decision's ``message`` with ``words`` (starting "; ") at the end of its cause part: before its ending on how
    the revision is tried again and the serving revision's words ("; revision S serves all traffic"), where
    ``_ending`` and ``retold`` still find them; at the end of a message without them."""
    if not words:
        return message
    _, sep, tail = message.rpartition("; revision ")
    cause, ending = _ending(message)
    return f"{cause}{words}{f'; {ending}' if ending else ''}{sep}{tail if sep else ''}"


def trouble_message(cause: RollbackCause, trouble: CandidateTrouble, deadline: int, retry: bool = True) -> str:
    """What a rollback for the candidate's pods says: their cause, and how the revision is tried again (``retry``:
    the record that makes it possible is kept), or that it is not."""
    if trouble.deadline_exceeded:
        what = "crash-loop" if cause == RollbackCause.CANDIDATE_CRASH_LOOP else "do not start"
        told = f"the candidate's pods {what}: its Deployment made no progress for {deadline}s: {trouble.text}"
    else:
        told = (
            f"the candidate's pods crash-loop for more than {deadline}s (progressDeadlineSeconds {deadline}): "
            f"{trouble.text}"
        )
    return f"{told}; {RETRY if retry else FINAL}"
