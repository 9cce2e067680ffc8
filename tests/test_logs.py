"""logs.configure: the processors every entry point logs through, credentials redaction included."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from ecs_cluster_manager.ops import logs

SECRETS = {
    "aws_access_key_id": "AKIAEXAMPLEKEY123456",
    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "aws_session_token": "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
    "password": "hunter2-example",
    "secret": "s3cr3t-example",
    "token": "t0k3n-example",
}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    output = io.StringIO()
    yield output
    structlog.reset_defaults()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_credential_fields_are_redacted(stream: io.StringIO, fmt: str) -> None:
    """A field named like a credential is written as *** in either format; other fields are kept."""
    logs.configure("INFO", fmt, stream)
    structlog.get_logger("test").info("credentials_seen", cluster="prod", **SECRETS)
    text = stream.getvalue()
    for value in SECRETS.values():
        assert value not in text
    assert "prod" in text
    if fmt == "json":
        event = json.loads(text)
        assert {key: event[key] for key in SECRETS} == dict.fromkeys(SECRETS, "***")


def test_level_filters_debug(stream: io.StringIO) -> None:
    """LOG_LEVEL=INFO drops debug events; DEBUG keeps them."""
    logs.configure("INFO", "json", stream)
    structlog.get_logger("test").debug("quiet")
    assert stream.getvalue() == ""
    logs.configure("DEBUG", "json", stream)
    structlog.get_logger("test").debug("loud")
    assert json.loads(stream.getvalue())["event"] == "loud"
