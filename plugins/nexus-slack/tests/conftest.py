"""The Slack connector's own tests run the real path, as the standard suite does: the plugin
from its entry point, a real Redis, a SQLite store, RQ workers and the web app — against the
Slack simulator (`nexus_slack.simulator`), never a patched HTTP client."""

from nexus_slack.simulator import SlackSimulator

from nexus_core.testing.suite import harness_fixtures

#: Tests run Slack's per-minute tiers on a one-second "minute".
MINUTE = 1.0

#: make_sim(**kw) → a started simulator with one account; sim; harness(sim, **env); nexus
make_sim, sim, harness, nexus = harness_fixtures("slack", SlackSimulator, minute=MINUTE)
