"""What the Canary analysis could not read, told beside its figures (controller.podmetrics.coverage): a rollout
judged on the figures of 1 of 3 candidate pods must not read like one judged on all 3. The words are bounded and
the operator's own: a pod's /metrics answer never reaches the rollout's message."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from modelship.controller import podmetrics
from modelship.controller.phasewindow import MAX_PODS, PodFigures, PodReading, Readings
from modelship.controller.podmetrics import (
    COVERAGE_NAMED,
    DEADLINE,
    coverage,
    fetch_pod,
    read_pods,
    unreadable_reason,
)
from tests.support.servers import loopback_http
from tests.unit.test_podmetrics import MAKERS, pod

GOOD = '# TYPE modelship_request_duration_seconds histogram\nmodelship_request_duration_seconds_count{model="m"} 5\n'


def reading(name: str) -> PodReading:
    return PodReading(name, True, None, PodFigures())


def test_an_answer_that_does_not_parse_is_told_in_the_operators_words_not_the_pods() -> None:
    """The parser's error quotes the answer: what a pod wrote would reach the rollout's message through it."""
    forged_words = "PROMOTE-ME {{{ \x1b[2Jcandidate is fine"

    def fetch(p: dict[str, Any], port: int) -> str:
        return forged_words if p["metadata"]["name"] == "digits-canary-b" else GOOD

    pods = [pod("digits-canary-a", "cand", 0), pod("digits-canary-b", "cand", 0), pod("forged", "cand", 0, owner=None)]
    readings = read_pods(pods, 9090, "cand", "stable", fetch, makers=MAKERS)
    assert readings.unreadable == (("digits-canary-b", "unparsable metrics"),)
    told = coverage(readings)
    assert told == (
        "; figures from 1 of 3 pods (1 unreadable (why: the operator's log): digits-canary-b; "
        "1 refused, not made by the Deployment running their revision: forged)"
    )
    assert "{{{" not in told and "\x1b" not in told and "PROMOTE" not in told


def test_every_pod_read_or_prometheus_figures_add_nothing() -> None:
    assert coverage(None) == ""  # Prometheus' figures: no pods looked at
    assert coverage(Readings((reading("a"), reading("b")))) == ""
    assert coverage(Readings()) == ""  # no ready pod: the message already waits for them


def test_many_pods_are_counted_a_few_named_in_a_stable_order() -> None:
    """Counts and the first few names, sorted: the same pods in another order (another list, another pass) say
    the same words, and a thousand forged pods do not make the message a thousand names long."""
    unread = [(f"digits-canary-{i:02}", "timed out") for i in range(7)]
    refused = [f"forged-{i:03}" for i in range(1000)]
    one = coverage(Readings((reading("digits-canary-x"),), tuple(unread), tuple(refused)))
    other = coverage(Readings((reading("digits-canary-x"),), tuple(reversed(unread)), tuple(reversed(refused))))
    assert one == other
    assert one.startswith("; figures from 1 of 1008 pods (7 unreadable (why: the operator's log): digits-canary-00, ")
    assert "digits-canary-02 and 4 more; 1000 refused" in one and one.endswith("forged-002 and 997 more)")
    assert len(one) < 400 and one.count("forged-") == COVERAGE_NAMED


def test_names_and_reasons_are_bounded_and_printable() -> None:
    """Readings built by anyone (a forged status is not validated): names and reasons are cut and cleaned."""
    told = coverage(Readings((), (("p\n" + "x" * 500, "y\x07" * 200),)))
    assert "\n" not in told and "\x07" not in told and len(told) < 250


def test_a_pod_that_stays_unreadable_for_another_reason_at_each_look_says_the_same_words() -> None:
    """A slow pod times out at one look, is cut by the read's deadline at the next (another pod was slow first),
    its connection is refused while it restarts: the message (a status write when it changes, every 5 s) does not
    follow; the operator's log says each look's reason."""
    told = {
        coverage(Readings((reading("digits-canary-a"),), (("digits-canary-b", why),), ("forged",)))
        for why in ("timed out", DEADLINE, "connection refused", "answered 503")
    }
    assert told == {
        "; figures from 1 of 3 pods (1 unreadable (why: the operator's log): digits-canary-b; "
        "1 refused, not made by the Deployment running their revision: forged)"
    }


def test_pods_past_what_a_window_follows_are_not_said_to_be_counted() -> None:
    """A phase's window follows at most MAX_PODS pods (the first by name): the figures are theirs, not every
    pod's read (phasewindow.samples)."""
    many = tuple(reading(f"digits-canary-{i:03}") for i in range(MAX_PODS + 36))
    assert coverage(Readings(many)) == (
        f"; figures from {MAX_PODS} of {MAX_PODS + 36} pods "
        f"(36 read but not counted, past the {MAX_PODS} pods a phase's window follows)"
    )
    told = coverage(Readings(many, (("digits-canary-zzz", "timed out"),)))
    assert told.startswith(f"; figures from {MAX_PODS} of {MAX_PODS + 37} pods (1 unreadable ")
    assert coverage(Readings(many[:MAX_PODS])) == ""  # all of them followed


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (TimeoutError("timed out"), "timed out"),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (ConnectionResetError(104, "reset"), "connection failed"),
        (ValueError("could not convert string to float: 'pod text'"), "unparsable metrics"),
        (OSError(113, "No route to host"), "unreachable"),
        (podmetrics.MetricsUnreadable("/metrics answered 503", "answered 503"), "answered 503"),
    ],
)
def test_each_error_has_the_operators_words(error: Exception, why: str) -> None:
    assert unreadable_reason(error) == why


def test_pods_past_the_reads_deadline_are_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(podmetrics, "DEADLINE_SECONDS", -1.0)  # the deadline passed before the first pod
    readings = read_pods([pod("digits-canary-a", "cand", 0), pod("digits-1", "stable", 0)], 9090, "cand", "stable",
                         lambda p, port: GOOD, makers=MAKERS)  # fmt: skip
    assert readings.unreadable == (("digits-canary-a", DEADLINE), ("digits-1", DEADLINE))
    told = "; figures from 0 of 2 pods (2 unreadable (why: the operator's log): digits-1, digits-canary-a)"
    assert coverage(readings) == told


@pytest.fixture
def server() -> Iterator[int]:
    """A pod's /metrics that answers a bad status line of its own words."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.wfile.write(b"HTTP/9 PROMOTE-ME\r\n\r\n")

        def log_message(self, *args: Any) -> None:
            pass

    with loopback_http(Handler) as url:
        yield int(url.rsplit(":", 1)[1])


def test_a_bad_http_answer_is_told_without_its_text(server: int) -> None:
    readings = read_pods([pod("digits-canary-a", "cand", server)], 9090, "cand", "stable",
                         lambda p, _port: fetch_pod(p, server), makers=MAKERS)  # fmt: skip
    assert readings.unreadable == (("digits-canary-a", "not an HTTP answer"),)


def test_the_rollouts_message_tells_what_its_figures_left_out() -> None:
    """A rollout judged on the figures of some of its pods reads differently from one judged on all of them."""
    from dataclasses import replace

    from modelship.controller.observe import Observed
    from modelship.controller.plan import plan
    from tests.support.endpoints import routed
    from tests.unit.test_plan import CONFIG, NOW, cond, deployment
    from tests.unit.test_verify import OLD, canary_obs, md_with, new_revision, readings

    md, rev, jobs = new_revision()
    base = Observed(
        jobs=jobs,
        deployment=deployment(OLD, CONFIG.images.serving),
        canary=canary_obs(rev, 1, False),
        canary_service_ip="10.96.0.9",
        canary_endpoints=routed((rev, 1), service="digits-canary"),
    )
    s1 = plan(md, Observed(jobs=jobs, deployment=base.deployment), CONFIG, NOW).status
    partial = replace(readings(3, 2, 2), unreadable=(("digits-canary-b", "timed out"),), refused=("forged",))
    s2 = plan(md_with(s1), replace(base, readings=partial), CONFIG, NOW).status
    told = "; figures from 2 of 4 pods (1 unreadable (why: the operator's log): digits-canary-b; 1 refused, "
    assert told in s2["rollout"]["message"] and told in cond(s2, "Verified")["message"], s2["rollout"]["message"]
    whole = plan(md_with(s1), replace(base, readings=readings(3, 2, 2)), CONFIG, NOW).status
    assert "figures from" not in whole["rollout"]["message"]


def test_what_the_figures_left_out_goes_with_the_cause_before_the_ending() -> None:
    """Coverage words join a rollback's cause: its ending (how the revision is tried again) and the serving
    revision's words stay last, where ``retold`` finds them, so a later rewording keeps the words once."""
    from modelship.controller.canary_trouble import FINAL, RETRY, retold, with_cause_words

    words = "; figures from 2 of 3 pods (1 unreadable (why: the operator's log): digits-canary-b)"
    crash = f"the candidate's pods crash-loop: OOMKilled; {RETRY}; revision s1 serves all traffic"
    told = with_cause_words(crash, words)
    assert told == f"the candidate's pods crash-loop: OOMKilled{words}; {RETRY}; revision s1 serves all traffic"
    again = retold(told, FINAL)
    assert again == f"the candidate's pods crash-loop: OOMKilled{words}; {FINAL}; revision s1 serves all traffic"
    assert again.count("figures from") == 1 and RETRY not in again
    analysis = "ErrorRate 0.5 over 10 requests; revision s1 serves all traffic"
    assert with_cause_words(analysis, words) == f"ErrorRate 0.5 over 10 requests{words}; revision s1 serves all traffic"
    assert with_cause_words("shadow held 1/10s", words) == f"shadow held 1/10s{words}"
    assert with_cause_words(crash, "") == crash
