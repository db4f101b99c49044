"""Logging: JSON lines with context, stdlib routed in, secrets redacted."""

import io
import json
import logging

import pytest
from loguru import logger

from nexus_core.log import configure_logging, redact


@pytest.fixture
def json_log():
    buf = io.StringIO()
    configure_logging("DEBUG", "json", sink=buf)
    yield buf
    logger.remove()


def lines(buf):
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_the_work_context(json_log):
    with logger.contextualize(tenant_id="t1", install_id="i1", provider="hubspot"):
        logger.info("page committed")
    (line,) = lines(json_log)
    assert line["message"] == "page committed"
    assert (line["tenant_id"], line["install_id"], line["provider"]) == ("t1", "i1", "hubspot")
    assert line["level"] == "INFO"


def test_stdlib_logging_is_routed_with_its_logger_name(json_log):
    logging.getLogger("urllib3.connectionpool").warning("Retrying %s", "GET /x")
    (line,) = lines(json_log)
    assert line["message"] == "Retrying GET /x" and line["logger"] == "urllib3.connectionpool"


def test_exceptions_stay_on_one_json_line(json_log):
    try:
        raise ValueError("bad refresh_token=rt-123")
    except ValueError:
        logger.exception("refresh failed")
    (line,) = lines(json_log)
    assert line["exception"] == "ValueError: bad refresh_token=***"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOi.abc", "eyJhbGciOi.abc"),
        ('{"access_token": "at-9f8e7d"}', "at-9f8e7d"),
        ("refresh_token=rt-1&client_id=x", "rt-1"),
        ("client_secret=shh", "shh"),
        ("token xoxb-1234-5678-abcdef", "xoxb-1234-5678-abcdef"),
        ("xoxe.xoxp-1-Mi0yLTE", "xoxe.xoxp-1-Mi0yLTE"),
        ("postgresql://user:hunter2@db/x", "hunter2"),
    ],
)
def test_redact_removes_credentials(text, secret):
    assert secret not in redact(text)


def test_secrets_are_redacted_in_written_lines(json_log):
    logger.info("exchanging code with client_secret=s3cr3t")
    assert "s3cr3t" not in json_log.getvalue()
