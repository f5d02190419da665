"""The model stand-in (tests/fakemodel.py) answers whole or makes the test fail: a client
that goes away, a body cut short, a request it cannot answer, and prompts that never
come are errors the test sees, never a part taken for the whole."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from fakemodel import FakeModel
from helpers import wait_for


@pytest.fixture
def model() -> Iterator[FakeModel]:
    with FakeModel(delay=0.0) as m:
        yield m


def messages(prompt: str, stream: bool = True) -> dict[str, object]:
    """An Anthropic Messages request that offers a tool (a conversation turn)."""
    return {
        "model": "fake-model",
        "stream": stream,
        "tools": [{"name": "Bash"}],
        "messages": [{"role": "user", "content": prompt}],
    }


def raw_request(url: str, body: bytes, length: int | None = None) -> socket.socket:
    """A POST to /v1/messages sent by hand (``length``: the Content-Length it claims)."""
    port = int(url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    s.sendall(head.encode() + body)
    return s


def test_a_whole_answer_is_recorded_as_one(model: FakeModel) -> None:
    with httpx.Client(base_url=model.url, timeout=30) as c:
        r = c.post("/v1/messages", json=messages("hello there"))
    assert r.status_code == 200
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == {"type": "message_stop"}
    said = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert said == "Answer: hello there"
    (req,) = model.wait_answered(timeout=10)
    assert (req.answer, req.error, req.ended is not None) == ("Answer: hello there", None, True)
    assert model.wait_prompts(1, timeout=0) == [req]
    model.check()


def test_a_client_that_goes_away_before_its_answer_fails_the_check(model: FakeModel) -> None:
    s = raw_request(model.url, json.dumps(messages("slow one [[delay 60]]")).encode())
    wait_for(lambda: model.prompts(), what="the request to arrive")
    s.close()  # a CLI that timed out or was killed, 60 s before the answer was due
    (bad,) = wait_for(model.failures, what="the stand-in to see the client gone")
    assert bad.cut and bad.answer == "" and "went away before the answer" in (bad.error or "")
    with pytest.raises(AssertionError, match=r"did not give every answer whole:\n.*'slow one \[\[delay 60\]\]'"):
        model.check()
    with pytest.raises(AssertionError, match="went away before the answer"):
        model.wait_prompts(1, timeout=10)  # the prompt came, but its answer did not go out whole
    with pytest.raises(AssertionError, match="went away before the answer"):
        model.wait_answered(timeout=10)


def test_a_cut_the_test_made_on_purpose_is_forgiven_and_later_ones_are_not(model: FakeModel) -> None:
    s = raw_request(model.url, json.dumps(messages("killed mid-turn [[delay 60]]")).encode())
    wait_for(lambda: model.prompts(), what="the request to arrive")
    s.close()
    wait_for(model.failures, what="the cut")
    model.forgive_cut(before=time.time())
    model.check()
    s = raw_request(model.url, json.dumps(messages("the next process [[delay 60]]")).encode())
    wait_for(lambda: len(model.prompts()) == 2, what="the second request")
    s.close()
    (bad,) = wait_for(model.failures, what="the second cut")
    assert bad.prompt == "the next process [[delay 60]]"


def test_a_body_cut_short_is_an_error(model: FakeModel) -> None:
    whole = json.dumps(messages("cut")).encode()
    s = raw_request(model.url, whole[:10], length=len(whole))
    s.shutdown(socket.SHUT_WR)  # the client dies mid-body
    (bad,) = wait_for(model.failures, what="the short body seen")
    s.close()
    assert bad.cut and f"10 of {len(whole)} bytes" in (bad.error or "") and not bad.main
    assert model.prompts() == []  # what was cut never counts as a prompt


def test_a_request_the_stand_in_cannot_answer_is_a_500_and_an_error(model: FakeModel) -> None:
    with httpx.Client(base_url=model.url, timeout=30) as c:
        r = c.post("/v1/messages", json={"model": "fake-model", "messages": 5})
        bad_json = c.post("/v1/messages", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 500 and "stand-in:" in r.json()["error"]["message"]
    assert bad_json.status_code == 400
    errors = [f.error or "" for f in model.failures()]
    assert len(errors) == 2 and "the stand-in failed: TypeError" in errors[0] and "not JSON" in errors[1]
    assert not any(f.cut for f in model.failures())
    model.forgive_cut(before=time.time() + 60)  # forgives clients that went away, not the stand-in's own failures
    with pytest.raises(AssertionError, match="the stand-in failed"):
        model.check()


def test_waiting_for_prompts_that_do_not_come_fails_instead_of_returning_part(model: FakeModel) -> None:
    with httpx.Client(base_url=model.url, timeout=30) as c:
        assert c.post("/v1/messages", json=messages("only one", stream=False)).status_code == 200
    with pytest.raises(AssertionError, match=r"the model got 1 of 2 prompts within 0s: \['only one'\]"):
        model.wait_prompts(2, timeout=0.2)
