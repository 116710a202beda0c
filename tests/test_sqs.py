"""SQS backend tests: real boto3 calls to a moto_server on loopback.

moto does not enforce SQS's rule that bodies and attribute values be
XML-legal text, so the tests capture every request client-side (a botocore
event hook) and check it. Fault tests run real worker processes, SIGKILL
them, and count executions in an SQLite ledger (tests/sqs_app.py).
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import logging
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqs_app
from worker_proc import report, stop, wait_for

from gatorapp import App, Worker
from gatorapp.backends import Message, load_backend
from gatorapp.backends.sqs import SQSBackend
from gatorapp.backends.sqs_messages import GROWTH
from gatorapp.envelope import Task
from gatorapp.errors import BackendError, ConfigurationError, PayloadTooLarge

TESTS = Path(__file__).parent
# What SQS accepts in a body or attribute value (W3C XML 1.0 characters).
XML_LEGAL = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


# -- helpers ------------------------------------------------------------------------------------


def capture(backend: Any) -> list[tuple[str, dict[str, Any]]]:
    """Record (operation, parameters) of every SQS call the backend makes from now on."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, copy.deepcopy(params)))

    backend.client.meta.events.register("provide-client-params.sqs", hook)
    return calls


def sent_messages(calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for op, params in calls:
        if op == "SendMessage":
            out.append(params)
        elif op == "SendMessageBatch":
            out.extend(params["Entries"])
    return out


def raw_client(sqs_server: str) -> Any:
    return boto3.client("sqs", endpoint_url=sqs_server, region_name="us-east-1")


def producer(url: str, lease: float = 2.0) -> tuple[App, Any, Any, Any]:
    """An app whose tasks carry the names tests/sqs_app.py registers."""
    app = App(url, lease=lease)

    @app.task(name="sqs_app.work")
    def work(key, sleep=0.0): ...

    @app.task(name="sqs_app.slow_first_time")
    def slow_first_time(key, sleep): ...

    @app.task(name="sqs_app.always_fails", retries=0)
    def always_fails(key): ...

    return app, work, slow_first_time, always_fails


def worker_env(url: str, ledger: Path, lease: float = 2.0) -> dict[str, str]:
    sqs_app.create_ledger(str(ledger))
    env = dict(os.environ)  # holds the sqs_env credentials while the test runs
    env.update(
        GATORAPP_SQS_TEST_URL=url,
        GATORAPP_SQS_TEST_LEDGER=str(ledger),
        GATORAPP_SQS_TEST_LEASE=str(lease),
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
    )
    return env


def gatorapp(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gatorapp", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = gatorapp(env, *args)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def runs(ledger: Path, event: str = "done") -> collections.Counter[str]:
    conn = sqs_app.ledger(str(ledger))
    try:
        rows = conn.execute("SELECT key FROM runs WHERE event = ?", (event,)).fetchall()
    finally:
        conn.close()
    return collections.Counter(r[0] for r in rows)


# -- URL and names (no server) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqs://us-east-1/path",
        "sqs://key:secret@us-east-1/",
        "sqs://US_EAST/",
        "sqs://us-east-1/?nope=1",
        "sqs://us-east-1/?wait=30",
        "sqs://us-east-1/?max_delay=901",
        "sqs://us-east-1/?max_message_size=2000000",
        "sqs://us-east-1/?prefix=bad.prefix",
        "sqs://us-east-1/?create=maybe",
        "sqs://us-east-1/?endpoint_url=localhost:5000",
        "sqs://us-east-1/?retry_mode=legacy",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        load_backend(url)


def test_url_options_and_no_io_before_first_use() -> None:
    # A closed port: building the backend must not touch the network.
    b = load_backend(
        "sqs://eu-west-1/?endpoint_url=http://127.0.0.1:9&prefix=p_&create=false&wait=5"
        "&max_message_size=262144&max_delay=60&retry_mode=adaptive&max_attempts=7"
    )
    assert isinstance(b, SQSBackend)
    c = b.config
    assert (c.region, c.prefix, c.create, c.wait) == ("eu-west-1", "p_", False, 5)
    assert (c.max_message_size, c.max_delay) == (262144, 60)
    assert b.sqs._client is None
    assert b.client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert c.sqs_name("emails") == "p_emails" and c.sqs_name("emails", dead=True) == "p_emails-dlq"
    assert (c.queue_of("p_emails-dlq"), c.queue_of("other")) == ("emails", None)


@pytest.mark.parametrize("name", ["emails.high", "with space", "x-dlq", "q" * 80, "caf\u00e9"])
def test_queue_names_sqs_cannot_hold_are_refused(name: str) -> None:
    b = load_backend("sqs://us-east-1/?endpoint_url=http://127.0.0.1:9")
    with pytest.raises(ConfigurationError, match="SQS"):
        b.enqueue([Message(name, "t1", b"x")])


# -- encoding and size ----------------------------------------------------------------------


def test_every_body_and_attribute_sent_is_xml_legal(sqs_url: str) -> None:
    b = load_backend(sqs_url)
    calls = capture(b)
    rng = random.Random(4)
    payloads = [bytes(range(32)), b"\xff\xfe\xef\xbf\xbe\xef\xbf\xbf", "\ufffe\uffff".encode()]
    payloads += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))) for _ in range(97)]
    q = "legal"
    b.enqueue([Message(q, f"t{i}", data) for i, data in enumerate(payloads)])
    got: dict[str, bytes] = {}
    held = []
    while len(got) < len(payloads):
        batch = b.reserve([q], 10, 30, "w")
        assert batch, "messages went missing"
        for r in batch:
            got[r.task_id] = r.data
        held.extend(batch)
    assert got == {f"t{i}": data for i, data in enumerate(payloads)}  # byte-exact
    # Error text and reasons with control characters, into the dead letters and back.
    nasty = "Traceback\x00\x01\x1f \ufffe\ud800 end"
    assert all(b.bury([(r, "failed\x00", nasty) for r in held[:5]]))
    b.dead_add(q, "raw", bytes(range(32)), "decode_error", nasty)
    assert all(b.retry([(r, r.data + b"\x00", time.time() + 5) for r in held[5:10]]))
    assert b.dead_requeue(q, "raw")
    assert b.dead_get(q, "t0") is not None and b.dead_get(q, "t0").data == payloads[0]
    b.ack(held[10:])
    sent = sent_messages(calls)
    assert len(sent) >= len(payloads) + 12
    for entry in sent:
        assert XML_LEGAL.fullmatch(entry["MessageBody"]), entry["MessageBody"][:80]
        for name, attr in entry.get("MessageAttributes", {}).items():
            assert XML_LEGAL.fullmatch(attr["StringValue"]), (name, attr["StringValue"])
    b.close()


def test_oversize_fails_at_delay_before_any_network_call(sqs_url: str) -> None:
    app, work, *_ = producer(sqs_url + "&max_message_size=262144")
    calls = capture(app.backend)
    with pytest.raises(PayloadTooLarge, match="262144"):
        work.delay("x" * 200_000)  # 200 kB of msgpack is ~267 kB of base64
    with pytest.raises(PayloadTooLarge):
        producer(sqs_url)[1].delay("x" * 800_000)  # over the 1 MiB default after base64
    assert calls == []
    work.delay("x" * 190_000)  # fits
    assert [op for op, _ in calls].count("SendMessageBatch") == 1


def test_size_limit_comes_from_the_queues_maximum_message_size(
    sqs_url: str, sqs_server: str, sqs_prefix: str
) -> None:
    raw_client(sqs_server).create_queue(
        QueueName=sqs_prefix + "small", Attributes={"MaximumMessageSize": "262144"}
    )
    b = load_backend(sqs_url)  # the URL says nothing: the default (1 MiB) is assumed
    calls = capture(b)
    # SQS counts the base64 body plus attribute names, types and values; the
    # check keeps room for what a retry or a dead letter adds.
    overhead = len("gatorapp.id") + len("String") + len("t1") + GROWTH
    fit = (262144 - overhead) // 4 * 3
    with pytest.raises(PayloadTooLarge, match="MaximumMessageSize"):
        b.enqueue([Message("small", "t0", b"ok"), Message("small", "t1", b"\x00" * (fit + 3))])
    assert sent_messages(calls) == []  # looked the limit up, refused before any send
    assert [op for op, _ in calls] == ["GetQueueUrl", "GetQueueAttributes"]
    b.enqueue([Message("small", "t1", b"\x00" * fit)])
    (r,) = b.reserve(["small"], 10, 30, "w")
    assert r.data == b"\x00" * fit
    b.close()


def test_a_task_sqs_took_is_not_refused_on_its_retry_or_as_a_dead_letter(
    sqs_url: str, sqs_server: str, sqs_prefix: str
) -> None:
    raw = raw_client(sqs_server)
    for name in ("edge", "edge-dlq"):  # older 256 KiB queues, the dead letters' too
        raw.create_queue(QueueName=sqs_prefix + name, Attributes={"MaximumMessageSize": "262144"})
    b = load_backend(sqs_url)
    overhead = len("gatorapp.id") + len("String") + len("t1")
    # Within 36 bytes of the limit: SQS would take it, but not its retry (gatorapp.due).
    snug = (262144 - overhead - 30) // 4 * 3
    with pytest.raises(PayloadTooLarge, match="retry"):
        b.enqueue([Message("edge", "t1", b"\x00" * snug)])
    largest = (262144 - overhead - GROWTH) // 4 * 3
    b.enqueue([Message("edge", "t1", b"\x01" * largest), Message("edge", "t2", b"\x02" * largest)])
    r1, r2 = sorted(b.reserve(["edge"], 10, 30, "w"), key=lambda r: r.task_id)
    assert b.retry([(r1, r1.data, time.time() + 60)]) == [True]
    assert b.bury([(r2, "retries_exhausted", "Traceback \u00e9" * 10_000)]) == [True]
    letter = b.dead_get("edge", "t2")
    assert letter is not None and letter.data == r2.data and letter.error.startswith("Traceback")
    assert b.stats("edge").delayed == 1  # the retry, waiting for its due time
    b.close()


def test_a_send_sqs_refuses_on_retry_keeps_the_task(
    sqs_url: str, sqs_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    b = load_backend(sqs_url)
    b.enqueue([Message("shrunk", "t1", b"\x00" * 3000)])
    (r,) = b.reserve(["shrunk"], 10, 1, "w")
    # The queue's limit was lowered after .delay() (this process still knows the old one).
    raw_client(sqs_server).set_queue_attributes(
        QueueUrl=b.sqs.url("shrunk"), Attributes={"MaximumMessageSize": "1024"}
    )
    with caplog.at_level(logging.WARNING, "gatorapp.sqs"):
        assert b.retry([(r, r.data + b"!", time.time())]) == [True]  # this worker is done
    assert "SQS refused the retry message of task t1" in caplog.text
    time.sleep(1.2)  # the lease (1 s) runs out: the task comes back as it was
    (again,) = b.reserve(["shrunk"], 10, 30, "w")
    assert (again.task_id, again.data) == ("t1", r.data)
    b.close()


# -- delays ------------------------------------------------------------------------------------


def test_long_delays_travel_in_hops_and_never_run_early(sqs_url: str) -> None:
    b = load_backend(sqs_url + "&max_delay=1")  # hops of 1 s instead of 900
    calls = capture(b)
    due = time.time() + 3.5
    b.enqueue([Message("hops", "late", b"x", due), Message("hops", "now", b"y")])
    assert [r.task_id for r in b.reserve(["hops"], 10, 30, "w")] == ["now"]
    got = []
    while not got:
        got = b.reserve(["hops"], 10, 30, "w")
        assert time.time() < due + 5, "the delayed task never came"
        if not got:
            time.sleep(0.1)
    assert time.time() >= due  # on time, not early
    assert got[0].data == b"x" and got[0].deliveries == 1  # hops are fresh messages
    hops = [
        e
        for e in sent_messages(calls)
        if e["MessageAttributes"]["gatorapp.id"]["StringValue"] == "late"
    ]
    assert len(hops) >= 3
    assert all(e["DelaySeconds"] <= 1 for e in hops)
    b.close()


def test_delay_seconds_never_exceeds_900(sqs_url: str) -> None:
    b = load_backend(sqs_url)
    calls = capture(b)
    now = time.time()
    b.enqueue([Message("far", "hour", b"x", now + 3600), Message("far", "min", b"y", now + 60)])
    b.enqueue([Message("far", "r", b"z")])
    (r,) = b.reserve(["far"], 10, 30, "w")
    assert b.retry([(r, b"z2", now + 10_000)]) == [True]
    delays = {
        e["MessageAttributes"]["gatorapp.id"]["StringValue"]: (
            e["DelaySeconds"],
            e["MessageAttributes"].get("gatorapp.due", {}).get("StringValue"),
        )
        for e in sent_messages(calls)
    }
    assert delays["hour"][0] == 900 and float(delays["hour"][1]) == pytest.approx(now + 3600)
    assert delays["min"][0] == 60
    assert delays["r"][0] == 900  # the retry too
    assert b.reserve(["far"], 10, 30, "w") == []
    assert b.stats("far").delayed == 3  # approximate on AWS
    b.close()


def test_wait_long_polls_and_hands_over_what_arrived(sqs_url: str) -> None:
    b = load_backend(sqs_url)
    other = load_backend(sqs_url)
    calls = capture(b)
    b.reserve(["lp"], 1, 30, "w")  # creates the queue
    started = time.time()
    b.wait(["lp"], 0.5)
    assert 0.8 < time.time() - started < 3  # SQS long polls in whole seconds
    assert calls[-1][1]["WaitTimeSeconds"] == 1
    other.enqueue([Message("lp", "t1", b"x")])
    b.wait(["lp"], 0.5)
    receives = sum(op == "ReceiveMessage" for op, _ in calls)
    (r,) = b.reserve(["lp"], 1, 30, "w")
    assert r.task_id == "t1"
    assert sum(op == "ReceiveMessage" for op, _ in calls) == receives  # from the stash
    assert b.ack([r]) == [True]
    b.close()
    other.close()


def test_what_an_idle_poll_received_is_never_handed_out_stale(sqs_url: str) -> None:
    # The worker's calls: idle, it long-polls "emails"; its next reserve could fill
    # up from "default" first. What the poll received must not wait past its lease.
    b, other = load_backend(sqs_url), load_backend(sqs_url)
    queues = ["default", "emails"]
    assert b.reserve(queues, 1, 1, "w") == []  # creates the queues; 1 s leases, one task
    other.enqueue([Message("emails", "e", b"x")])
    b.wait(["emails"], 0.5)
    other.enqueue([Message("default", f"d{i}", b"x") for i in range(3)])
    time.sleep(0.3)  # empty receives are spaced out: let "default" be asked again
    handed = b.reserve(queues, 1, 1, "w")
    assert b.ack(handed) == [True]
    time.sleep(1.3)  # past the lease of anything received before
    taken = other.reserve(["emails"], 10, 30, "o")
    assert all(other.ack(taken))
    handed += b.reserve(queues, 10, 1, "w")
    ids = [r.task_id for r in handed + taken]
    assert ids.count("e") == 1, ids
    b.close()
    other.close()


def test_a_received_task_no_reserve_takes_is_handed_back_before_its_lease_ends(
    sqs_url: str,
) -> None:
    b, other = load_backend(sqs_url), load_backend(sqs_url)
    assert b.reserve(["idle"], 10, 3, "w") == []  # 3 s leases from now on
    other.enqueue([Message("idle", "t", b"x")])
    b.wait(["idle"], 0.5)  # received and kept for a reserve that does not come
    time.sleep(2.2)  # within its lease: only a hand-back makes it visible now
    (r,) = other.reserve(["idle"], 10, 30, "o")
    assert r.task_id == "t" and other.ack([r]) == [True]
    assert b.reserve(["idle"], 10, 3, "w") == []  # and no stale copy is left behind
    b.close()
    other.close()


def test_stop_waiting_hands_back_what_an_idle_poll_received(sqs_url: str) -> None:
    # A worker stopping after its last idle poll must not leave that poll's
    # task hidden for a whole lease (the worker calls stop_waiting at shutdown).
    b, other = load_backend(sqs_url), load_backend(sqs_url)
    assert b.reserve(["bye"], 10, 30, "w") == []  # 30 s leases from now on
    other.enqueue([Message("bye", "t", b"x")])
    b.wait(["bye"], 0.5)  # received and kept for a reserve that will not come
    b.stop_waiting()
    (r,) = other.reserve(["bye"], 10, 30, "o")  # visible again at once
    assert r.task_id == "t" and other.ack([r]) == [True]
    b.close()
    other.close()


def test_a_kept_lease_is_renewed_before_it_is_handed_out(sqs_url: str) -> None:
    b, other = load_backend(sqs_url), load_backend(sqs_url)
    assert b.reserve(["kept"], 10, 3, "w") == []
    other.enqueue([Message("kept", "t", b"x")])
    b.wait(["kept"], 0.5)
    time.sleep(1.3)  # over a third of its 3 s lease gone: too old to hand out as it is
    (r,) = b.reserve(["kept"], 10, 3, "w")
    time.sleep(2.0)  # the lease from the receive has run out; a renewed one has not
    assert other.reserve(["kept"], 10, 30, "o") == []
    assert b.ack([r]) == [True]
    b.close()
    other.close()


def test_scans_by_get_and_cancel_never_bury_waiting_tasks(sqs_url: str) -> None:
    app = App(sqs_url, lease=5)
    ran: list[int] = []

    @app.task
    def note(i: int) -> None:
        ran.append(i)

    for i in range(3):
        note.delay(i)
    for _ in range(6):  # each scan is a receive of every waiting message
        assert app.cancel("no-such-task") is None
    Worker(app, burst=True).run_forever()
    assert sorted(ran) == [0, 1, 2]
    assert app.backend.dead_list("default") == []


def test_max_receives_sets_an_sqs_redrive_policy(sqs_url: str, sqs_server: str) -> None:
    b = load_backend(sqs_url + "&max_receives=2")
    b.enqueue([Message("poison", "p", b"x")])
    url = b.sqs.url("poison")
    got = raw_client(sqs_server).get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    policy = json.loads(got["Attributes"]["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith("poison-dlq")
    assert int(policy["maxReceiveCount"]) == 2
    for _ in range(2):  # two workers that died holding it
        (r,) = b.reserve(["poison"], 10, 1, "w")
        assert r.deliveries == 1
        time.sleep(1.1)
    assert b.reserve(["poison"], 10, 1, "w") == []  # SQS moved it to the dead letters
    (letter,) = b.dead_list("poison")
    assert (letter.task_id, letter.data, letter.reason) == ("p", b"x", "max_receives")
    assert "redrive" in letter.error
    b.close()


def test_foreign_messages_never_break_a_reserve(sqs_url: str, sqs_server: str) -> None:
    app = App(sqs_url, lease=5)
    ran: list[int] = []

    @app.task
    def note(i: int) -> None:
        ran.append(i)

    raw, url = raw_client(sqs_server), app.backend.sqs.url("default")
    later = {"DataType": "Number", "StringValue": repr(time.time() + 3600)}
    no_id = raw.send_message(
        QueueUrl=url, MessageBody="due, no id", MessageAttributes={"gatorapp.due": later}
    )["MessageId"]
    raw.send_message(
        QueueUrl=url,
        MessageBody="bad due",
        MessageAttributes={
            "gatorapp.id": {"DataType": "String", "StringValue": "x1"},
            "gatorapp.due": {"DataType": "String", "StringValue": "soon"},
        },
    )
    note.delay(1)
    Worker(app, burst=True).run_forever()
    assert ran == [1]
    dead = {d.task_id: d.reason for d in app.backend.dead_list("default")}
    assert dead == {no_id: "decode_error", "x1": "decode_error"}  # no id: the SQS message id


def test_release_ends_the_lease_before_a_heartbeat_can_renew_it(sqs_url: str) -> None:
    # A heartbeat's extend that starts while release is on its way must not hide
    # the task again (for a whole lease) after release made it visible.
    b, other = load_backend(sqs_url), load_backend(sqs_url)
    b.enqueue([Message("race", "t", b"x")])
    (r,) = b.reserve(["race"], 10, 30, "w")
    released, renewing = threading.Event(), threading.Event()
    results: list[list[bool]] = []
    heartbeat = threading.Thread(target=lambda: results.append(b.extend([r])))

    def hook(params: dict[str, Any], **_: Any) -> None:
        if params["Entries"][0]["VisibilityTimeout"] == 0:  # the release, about to be sent
            heartbeat.start()
            deadline = time.monotonic() + 2
            while heartbeat.is_alive() and not renewing.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:  # the heartbeat's renewal: it lands after the release
            renewing.set()
            released.wait(5)

    b.client.meta.events.register("provide-client-params.sqs.ChangeMessageVisibilityBatch", hook)
    assert b.release([r]) == [True]
    released.set()
    heartbeat.join(5)
    assert results == [[False]]  # the lease had ended
    (again,) = other.reserve(["race"], 10, 30, "o")
    assert again.task_id == "t"
    b.close()
    other.close()


def test_a_deleted_queue_is_a_clear_error_not_a_takeover(sqs_url: str, sqs_server: str) -> None:
    b = load_backend(sqs_url)
    b.enqueue([Message("gone", "a", b"x"), Message("gone", "b", b"y")])
    ra, rb = sorted(b.reserve(["gone"], 10, 30, "w"), key=lambda r: r.task_id)
    raw_client(sqs_server).delete_queue(QueueUrl=b.sqs.url("gone"))  # a server restarted empty
    with pytest.raises(BackendError, match=r"'\S*gone' does not exist .* creates it again"):
        b.extend([ra, rb])  # the heartbeat finds out first
    assert b.reserve(["gone"], 10, 30, "w") == []  # created again
    assert b.ack([ra]) == [True]  # its message went with the queue: nobody took it over
    assert b.retry([(rb, b"y2", time.time())]) == [True]  # the task goes on in the new queue
    (r,) = b.reserve(["gone"], 10, 30, "w")
    assert (r.task_id, r.data) == ("b", b"y2")
    b.close()
    strict = load_backend(sqs_url + "&create=false")
    raw_client(sqs_server).delete_queue(QueueUrl=strict.sqs.url("gone"))
    with pytest.raises(BackendError, match="create=false"):
        strict.ack([r])
    strict.close()


@pytest.mark.parametrize(
    "queue, match", [("a.b", "A-Z a-z"), ("jobs.fifo", "FIFO"), ("q" * 70, "80 characters")]
)
def test_queue_names_sqs_cannot_hold_fail_at_decoration(queue: str, match: str) -> None:
    app = App("sqs://us-east-1/?endpoint_url=http://127.0.0.1:9")  # never reached
    with pytest.raises(ConfigurationError, match=match):

        @app.task(queue=queue)
        def f() -> None: ...

    with pytest.raises(ConfigurationError, match=match):
        App("sqs://us-east-1/?endpoint_url=http://127.0.0.1:9", default_queue=queue)


# -- take, stats, queues -----------------------------------------------------------------------


def test_take_cancel_stats_and_known_queues(sqs_url: str) -> None:
    app, work, *_ = producer(sqs_url)
    handles = [work.delay(i) for i in range(12)]
    later = work.options(delay_by=600).delay("later")
    assert app.cancel(handles[7].id) is not None  # found by scanning the visible messages
    assert app.cancel(handles[7].id) is None
    assert app.cancel(later.id) is None  # delayed: SQS hides it, so it cannot be found
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.running, s.dead) == (11, 1, 0, 0)
    assert app.backend.len("default") == 12
    assert "default" in app.backend.known_queues()
    app.backend.drop_all("default")
    assert app.backend.stats("default").ready == 0
    assert app.backend.stats("never-used") == app.backend.stats("never-used-either")


# -- dead letters through the CLI ------------------------------------------------------------


def test_dead_letters_listed_and_requeued_with_gatorapp_dead(
    sqs_url: str, sqs_server: str, sqs_prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    app, work, _, always_fails = producer(sqs_url)
    failing = always_fails.delay("f1")
    unknown = Task("sqs_app.not_registered", [1], queue="default")
    app.backend.enqueue([Message("default", unknown.task_id, unknown.serialize())])
    # A message gatorapp did not write (not base64, no attributes): undecodable.
    raw_client(sqs_server).send_message(
        QueueUrl=app.backend.sqs.url("default"), MessageBody="<not a task/>"
    )
    work.delay("ok")
    env = worker_env(sqs_url, ledger)
    code, out = cli(env, "worker", "-A", "sqs_app", "--burst")
    assert code == 0, out
    code, out = cli(env, "dead", "-A", "sqs_app", "ls")
    assert code == 0, out
    lines = [line.split("\t") for line in out.splitlines() if "\t" in line]
    reasons = {cols[1]: cols[3] for cols in lines}
    assert reasons[failing.id] == "retries_exhausted" and reasons[unknown.task_id] == "unknown_task"
    assert sorted(reasons.values()) == ["decode_error", "retries_exhausted", "unknown_task"]
    code, out = cli(env, "dead", "-A", "sqs_app", "show", failing.id)
    assert code == 0 and "RuntimeError: boom f1" in out, out
    code, out = cli(env, "dead", "-A", "sqs_app", "requeue", failing.id)
    assert code == 0 and "requeued 1" in out, out
    assert app.backend.dead_get("default", failing.id) is None
    code, out = cli(env, "worker", "-A", "sqs_app", "--burst")
    assert runs(ledger, "start")["f1"] == 2  # ran again, and failed again
    code, out = cli(env, "dead", "-A", "sqs_app", "purge", "--yes")
    assert code == 0 and "purged 3" in out, out
    assert runs(ledger) == {"ok": 1}


# -- worker processes killed and long tasks ----------------------------------------------------


@pytest.mark.slow
def test_killed_workers_task_comes_back_after_the_visibility_timeout(
    sqs_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    _, _, slow_first_time, _ = producer(sqs_url)
    slow_first_time.delay("k", 60)
    env = worker_env(sqs_url, ledger, lease=2)
    proc = gatorapp(env, "worker", "-A", "sqs_app")
    assert wait_for(lambda: runs(ledger, "start")["k"] == 1, 20)
    proc.kill()
    proc.wait()
    killed = time.time()
    proc = gatorapp(env, "worker", "-A", "sqs_app")
    try:
        assert wait_for(lambda: runs(ledger)["k"] == 1, 20)
        back = time.time() - killed
    finally:
        code, out = stop(proc)
    report(
        f"SQS SIGKILL mid-task: delivered again and done {back:.1f} s after the kill (lease 2 s)"
    )
    assert runs(ledger, "start")["k"] == 2
    assert back < 2 + 4  # the visibility timeout, plus a worker start and a poll
    assert code == 0, out


@pytest.mark.slow
def test_sigkill_three_times_over_500_tasks_loses_nothing(sqs_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    app, work, *_ = producer(sqs_url)
    n = 500
    work.starmap([(i, 0.01) for i in range(n)])
    env = worker_env(sqs_url, ledger, lease=2)
    # Kill at random points spread over the drain.
    marks = sorted(random.Random().sample(range(40, 420), 3))
    kills: list[int] = []
    for mark in marks:
        proc = gatorapp(env, "worker", "-A", "sqs_app", "-c", "4", "--prefetch", "4")
        assert wait_for(lambda m=mark: len(runs(ledger)) >= m, 60, interval=0.05)
        proc.kill()
        proc.wait()
        kills.append(len(runs(ledger)))
    proc = gatorapp(env, "worker", "-A", "sqs_app", "-c", "4")
    try:
        finished = wait_for(lambda: len(runs(ledger)) >= n, 90, interval=0.2)
    finally:
        code, out = stop(proc)
    done = runs(ledger)
    lost = [i for i in range(n) if str(i) not in done]
    dups = sum(c - 1 for c in done.values())
    starts = runs(ledger, "start")
    report(
        f"SQS SIGKILL x3 over {n} tasks (lease 2 s): kills after {kills} done; "
        f"lost={len(lost)} duplicate completions={dups} "
        f"re-run starts={sum(c - 1 for c in starts.values())}"
    )
    assert kills[-1] < n, "the drain finished before the last kill"
    dead = [(d.task_id, d.reason, d.error) for d in app.backend.dead_list("default")]
    assert finished and not lost, (
        f"lost {len(lost)} tasks, e.g. {lost[:10]}; dead: {dead[:5]}; "
        f"{app.backend.stats('default')}; last worker's log: {out[-3000:]}"
    )
    assert code == 0, out
    assert dups <= 3 * 8  # only what a killed worker held: -c 4 plus prefetch 4
    assert app.backend.dead_list("default") == []


@pytest.mark.slow
def test_task_running_three_visibility_timeouts_runs_once(sqs_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    _, work, *_ = producer(sqs_url)
    env = worker_env(sqs_url, ledger, lease=2)
    key = uuid.uuid4().hex[:6]
    work.delay(key, 6.5)  # 3x the 2 s lease and more
    work.delay(key + "-b", 0.1)  # prefetched: held unstarted as long behind it (-c 1)
    first = gatorapp(env, "worker", "-A", "sqs_app", "--prefetch", "1")
    assert wait_for(lambda: runs(ledger, "start")[key] + runs(ledger, "start")[key + "-b"] == 1, 20)
    second = gatorapp(env, "worker", "-A", "sqs_app")  # polls the whole time
    try:
        assert wait_for(lambda: len(runs(ledger)) == 2, 40, interval=0.2)
        time.sleep(2.5)  # a lost lease would show as a second start by now
    finally:
        for proc in (first, second):
            code, out = stop(proc)
            assert code == 0, out
    starts = runs(ledger, "start")
    report(f"SQS heartbeat: a 6.5 s task and one prefetched behind it, 2 s lease: {dict(starts)}")
    assert starts == {key: 1, key + "-b": 1}


def test_a_foreign_message_too_large_for_its_dead_letter_is_buried_cut(
    sqs_url: str, sqs_server: str
) -> None:
    # Its raw body grows by a third in base64: the whole of it no longer fits
    # the dead-letter queue, and a refused dead letter would bring it back
    # every lease, forever.
    app = App(sqs_url, lease=5)

    @app.task
    def note() -> None: ...

    url = app.backend.sqs.url("default")
    limit = app.backend.sqs.limit(str(app.backend.sqs.url("default", dead=True)))
    body = "<" + "x" * int(limit * 0.8) + "/>"
    raw_client(sqs_server).send_message(QueueUrl=url, MessageBody=body)
    Worker(app, burst=True).run_forever()
    (letter,) = app.backend.dead_list("default")
    assert letter.reason == "too_large"  # (over what a task may be: it is not one)
    assert f"{len(body)} bytes, sha256 {hashlib.sha256(body.encode()).hexdigest()}" in letter.error
    assert body.encode().startswith(letter.data) and 0 < len(letter.data) < len(body)
    assert app.backend.stats("default").ready == 0
    app.close()


def test_no_credentials_against_a_local_server_says_what_to_set(
    sqs_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    b = load_backend(sqs_url)
    with pytest.raises(BackendError, match="Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        b.enqueue([Message("creds", "t", b"x")])
    b.close()
