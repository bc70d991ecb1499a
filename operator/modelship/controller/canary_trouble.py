"""A Canary candidate whose own pods cannot serve: what they say (``CandidateTrouble``, read by
``stages.pod_causes.candidate_trouble``), the crash loop's own clock (``troubled_for``:
status.rollout.candidateFailingSince), whether the candidate is rolled back for them (``judge_trouble``:
CandidateCrashLoop, CandidateNotStarting) with what the rollback says (``trouble_message``), and when such a
rollback is tried again (``rearmed``). Pure; ``canary.decide`` reads them at each look of an analyzing phase."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..api.rollout_status import RollbackCause, RolloutPhase, RolloutStatus
from .conditions import parse_past, rfc3339


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


def troubled_for(state: RolloutStatus, trouble: CandidateTrouble | None, now: datetime) -> tuple[str | None, float]:
    """(candidateFailingSince to write, seconds it has lasted): the crash loop's own clock. Started when the pods
    crash-loop (a forged or future stamp starts anew now), kept while they go on crash-looping or a crashed pod is
    Ready for a moment (``recovering``), cleared when they say nothing or say something else (a pod not scheduled
    or not pulled is judged only by its Deployment's progress deadline, which needs no stamp): a crash after such
    trouble starts a clock of its own."""
    if trouble is None or not (trouble.crash_loop or trouble.recovering):
        return None, 0.0
    since = parse_past(state.candidate_failing_since, now)
    if since is None and not trouble.crash_loop:
        return None, 0.0
    since = since or now
    return rfc3339(since), max(0.0, (now - since).total_seconds())


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


RETRIED_CAUSES = frozenset({RollbackCause.CANDIDATE_CRASH_LOOP, RollbackCause.CANDIDATE_NOT_STARTING})
"""Rollbacks for the candidate's own pods: a fix of the spec that keeps the revision (serving resources, a node
selector) may cure them, so a new generation tries the revision again (``rearmed``)."""


def rearmed(state: RolloutStatus | None, candidate: str, generation: int | None) -> bool:
    """The rollback of ``candidate`` for its pods is over: the spec changed since (``generation``, the
    ModelDeployment's metadata.generation, is not the one recorded at the rollback), so a new rollout of it starts.
    An analysis rollback, an abort, or a record without the generation (pruned by an older CRD) stays final."""
    return (
        state is not None
        and state.candidate == candidate
        and state.phase == RolloutPhase.ROLLED_BACK
        and state.rollback_cause in RETRIED_CAUSES
        and state.rolled_back_generation is not None
        and generation is not None
        and generation != state.rolled_back_generation
    )


def trouble_message(cause: RollbackCause, trouble: CandidateTrouble, deadline: int) -> str:
    if trouble.deadline_exceeded:
        what = "crash-loop" if cause == RollbackCause.CANDIDATE_CRASH_LOOP else "do not start"
        told = f"the candidate's pods {what}: its Deployment made no progress for {deadline}s: {trouble.text}"
    else:
        told = (
            f"the candidate's pods crash-loop for more than {deadline}s (progressDeadlineSeconds {deadline}): "
            f"{trouble.text}"
        )
    return f"{told}; change the spec to try the revision again"
