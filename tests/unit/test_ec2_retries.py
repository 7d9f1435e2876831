"""EC2 retries end at the run's deadline, not after a count of attempts; other errors fail at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from snaptastic_boot.errors import AwsError
from snaptastic_boot.system.ec2 import Ec2

THROTTLED = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>'
             b"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>r</RequestID></Response>")
REFUSED = THROTTLED.replace(b"RequestLimitExceeded", b"InvalidParameterValue").replace(b"Request limit exceeded.", b"no")
DONE = (b'<?xml version="1.0" encoding="UTF-8"?><CreateTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        b"<requestId>r</requestId><return>true</return></CreateTagsResponse>")


class Ec2Stand:
    """Answers `throttle` throttled responses (503, as EC2's RequestLimitExceeded), then `final`."""

    def __init__(self) -> None:
        self.throttle = 0
        self.final = DONE
        self.seen = 0
        stand = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand.seen += 1
                throttled = stand.seen <= stand.throttle
                body = THROTTLED if throttled else stand.final
                self.send_response(503 if throttled else (400 if body is REFUSED else 200))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def stand(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ec2Stand]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    s = Ec2Stand()
    yield s
    s.httpd.shutdown()


def ec2(stand: Ec2Stand, deadline: float) -> Ec2:
    return Ec2("us-east-1", endpoint=stand.url, deadline=deadline, sleep_for=lambda cap: 0.01)


def test_throttling_is_retried_past_any_attempt_count_while_the_deadline_allows(stand: Ec2Stand) -> None:
    stand.throttle = 40  # botocore's old bound was 10 attempts
    client = ec2(stand, deadline=30)
    client.create_tags(["vol-1"], {"k": "v"})
    assert stand.seen == 41 and client.throttled == 40 and client.throttle_wait == pytest.approx(0.4)
    assert client.calls["CreateTags"] == 1


def test_the_deadline_ends_the_retries(stand: Ec2Stand) -> None:
    stand.throttle = 10**6
    client = ec2(stand, deadline=0.5)
    # The deadline counts from the start of the run; the client's own set-up is not what is under test.
    started = time.monotonic()
    client._deadline = started + 0.5
    with pytest.raises(AwsError, match="RequestLimitExceeded"):
        client.create_tags(["vol-1"], {"k": "v"})
    assert 0.5 <= time.monotonic() - started < 3 and stand.seen > 5


def test_other_errors_fail_at_once(stand: Ec2Stand) -> None:
    stand.final = REFUSED
    with pytest.raises(AwsError, match="InvalidParameterValue"):
        ec2(stand, deadline=30).create_tags(["vol-1"], {"k": "v"})
    assert stand.seen == 1


SNAPSHOTS = (b'<?xml version="1.0" encoding="UTF-8"?><CreateSnapshotsResponse xmlns="http://ec2.amazonaws.com/doc/'
             b'2016-11-15/"><requestId>r</requestId><snapshotSet/></CreateSnapshotsResponse>')


def test_create_snapshots_says_once_ec2_accepted_it_and_not_for_a_refused_attempt(stand: Ec2Stand) -> None:
    stand.throttle, stand.final = 2, SNAPSHOTS
    seen: list[int] = []
    ec2(stand, deadline=30).create_snapshots("i-0abc", [], {"role": "solr"}, "d",
                                             answered=lambda: seen.append(stand.seen))
    assert seen == [3]  # after the accepted third attempt, never for the two throttled ones
    stand.seen, stand.throttle, stand.final = 0, 0, REFUSED
    with pytest.raises(AwsError):
        ec2(stand, deadline=30).create_snapshots("i-0abc", [], {"role": "solr"}, "d", answered=lambda: seen.append(-1))
    assert seen == [3]
