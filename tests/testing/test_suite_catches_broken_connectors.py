"""The standard connector suite fails a broken connector in the right test: one that skips a
page, one that moves its delta cursor backwards, one that accepts a tampered webhook, one whose
records break its declared JSON schema — and passes the same connector unbroken. Run through pytest's own `pytester` in a subprocess."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

BROKEN = '''
import json

from nexus_example import ExampleConnector
from nexus_example.simulator import ExampleSimulator

from nexus_core import Provider, Stream, WebhookConfig
from nexus_core.testing.suite import connector_suite


class SkipsAPage(ExampleConnector):
    def backfill(self, ctx, stream, cursor):
        page = super().backfill(ctx, stream, cursor)
        if cursor is None and not page.done:  # jump over the second page
            skipped = super().backfill(ctx, stream, page.next_cursor)
            return type(page)(records=page.records, next_cursor=skipped.next_cursor,
                              done=skipped.done)
        return page


class CursorGoesBack(ExampleConnector):
    def delta(self, ctx, stream, cursor):
        page = super().delta(ctx, stream, cursor)
        if page.done:  # always start over from the beginning of time
            return type(page)(records=page.records, done=True,
                              next_cursor=json.dumps({"since": "2025-01-01T00:00:00.000Z",
                                                      "seen": []}))
        return page


class AcceptsAnything(ExampleConnector):
    provider = Provider(**{**{a.name: getattr(ExampleConnector.provider, a.name)
                              for a in type(ExampleConnector.provider).__attrs_attrs__},
                           "webhook": WebhookConfig(scheme="custom",
                                                    secret_envs=("EXAMPLE_WEBHOOK_SECRET",),
                                                    account_id_field="account_id",
                                                    delivery_id_field="webhook-id")})

    def verify_webhook(self, provider, request, secrets):
        return True


class BreaksItsSchema(ExampleConnector):
    provider = Provider(**{**{a.name: getattr(ExampleConnector.provider, a.name)
                              for a in type(ExampleConnector.provider).__attrs_attrs__},
                           "streams": (Stream("widgets", cursor_field="updated_at",
                                              json_schema={"type": "object",
                                                           "required": ["sku"]}),
                                       Stream("gadgets", cursor_field="updated_at"))})


TestSkipsAPage = connector_suite("example", simulator=ExampleSimulator, plugin=SkipsAPage)
TestCursorGoesBack = connector_suite("example", simulator=ExampleSimulator,
                                     plugin=CursorGoesBack)
TestAcceptsAnything = connector_suite("example", simulator=ExampleSimulator,
                                      plugin=AcceptsAnything)
TestBreaksItsSchema = connector_suite("example", simulator=ExampleSimulator,
                                      plugin=BreaksItsSchema)
TestHealthy = connector_suite("example", simulator=ExampleSimulator,
                              plugin=ExampleConnector)
'''


@pytest.mark.slow
def test_each_broken_connector_fails_the_test_that_names_its_bug(pytester):
    pytester.makepyfile(test_broken=BROKEN)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "-rfE",
        "-k", "exactly_once or delta_delivers_only or tampered", "-W", "ignore")
    outcomes = result.parseoutcomes()
    failed = {line.split("::")[1] + "::" + line.split("::")[2].split(" ")[0]
              for line in result.outlines if line.startswith("FAILED ")}
    assert failed == {
        "TestSkipsAPage::test_backfill_delivers_every_record_exactly_once",
        "TestCursorGoesBack::test_delta_delivers_only_changed_records",
        "TestAcceptsAnything::test_a_tampered_stale_or_replayed_webhook_is_not_processed",
        "TestBreaksItsSchema::test_backfill_delivers_every_record_exactly_once",
    }, "\n".join(result.outlines)
    assert outcomes.get("passed") == 11, outcomes
    assert "widgets record" in result.stdout.str() and "'sku' is a required property" in \
        result.stdout.str()
