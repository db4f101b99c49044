"""The Salesforce connector's own tests run the real path, as the standard suite does: the plugin
from its entry point, a real Redis, a SQLite store, RQ workers and the web app — against the
Salesforce simulator (`nexus_salesforce.simulator`), never a patched HTTP client."""

from nexus_salesforce.simulator import SalesforceSimulator

from nexus_core.testing.suite import harness_fixtures

#: make_sim(**kw) → a started simulator with one account; sim; harness(sim, **env); nexus
make_sim, sim, harness, nexus = harness_fixtures("salesforce", SalesforceSimulator)
