"""The lean path's signer against botocore's `SigV4Auth`: the same headers, byte for byte,
for the same request at the same second."""

from __future__ import annotations

import datetime
import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from esm.aws.sigv4 import JsonPostSigner

NOW = 1_796_000_000.25  # 2026-11-30T00:53:20Z, a quarter second in
HEADERS = {
    "X-Amz-Target": "Kinesis_20131202.GetRecords",
    "Content-Type": "application/x-amz-json-1.1",
    # Sent, never signed (botocore leaves it out of the signature).
    "User-Agent": "aiobotocore/3.10.0 md/Botocore#1.43.117 ua/2.1",
}


def _botocore(
    url: str,
    service: str,
    region: str,
    body: bytes,
    credentials: ReadOnlyCredentials,
    monkeypatch: pytest.MonkeyPatch,
    now: float = NOW,
) -> dict[str, str]:
    instant = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: instant)
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(HEADERS))
    SigV4Auth(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    ("url", "service", "region"),
    [
        ("http://127.0.0.1:4566", "kinesis", "us-east-1"),
        ("https://kinesis.eu-west-1.amazonaws.com", "kinesis", "eu-west-1"),
        ("https://sqs.us-east-1.amazonaws.com/", "sqs", "us-east-1"),
        ("http://localhost:80/prefix path/", "dynamodb", "ap-south-1"),
        ("https://streams.dynamodb.us-west-2.amazonaws.com:443?b=2&a=1", "dynamodb", "us-west-2"),
    ],
)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE  session/token=="])
@pytest.mark.parametrize("body", [b"", b'{"ShardIterator":"AAAA","Limit":100}', "é".encode()])
def test_signs_exactly_as_botocore(
    url: str,
    service: str,
    region: str,
    token: str | None,
    body: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    frozen = credentials.get_frozen_credentials()
    expected = _botocore(url, service, region, body, frozen, monkeypatch)
    signer = JsonPostSigner(url, service, region, HEADERS)
    assert signer.sign(body, frozen, now=NOW) == expected
    # A second call reuses the day's signing key and signs the same way.
    assert signer.sign(body, frozen, now=NOW) == expected


def test_a_new_day_or_new_secret_gets_a_new_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:4566"
    signer = JsonPostSigner(url, "kinesis", "us-east-1", HEADERS)
    first = Credentials("AKID1", "secret-one").get_frozen_credentials()
    signer.sign(b"{}", first, now=NOW)
    rotated = Credentials("AKID2", "secret-two", "token").get_frozen_credentials()
    assert signer.sign(b"{}", rotated, now=NOW) == _botocore(
        url, "kinesis", "us-east-1", b"{}", rotated, monkeypatch
    )
    tomorrow = NOW + 86_400
    assert signer.sign(b"{}", rotated, now=tomorrow) == _botocore(
        url, "kinesis", "us-east-1", b"{}", rotated, monkeypatch, tomorrow
    )


def test_without_a_time_it_signs_now() -> None:
    signer = JsonPostSigner("http://127.0.0.1:1", "kinesis", "us-east-1", HEADERS)
    before = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = signer.sign(b"{}", Credentials("a", "b").get_frozen_credentials())
    after = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    assert before <= headers["X-Amz-Date"] <= after
