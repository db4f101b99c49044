"""The HubSpot connector's own tests run the real path, as the standard suite does: the plugin
from its entry point, a real Redis, a SQLite store, RQ workers and the web app — against the
HubSpot simulator (`nexus_hubspot.simulator`), never a patched HTTP client."""

from nexus_hubspot.simulator import HubSpotSimulator

from nexus_core.testing.suite import harness_fixtures

#: make_sim(**kw) → a started simulator with one account; sim; harness(sim, **env); nexus
make_sim, sim, harness, nexus = harness_fixtures("hubspot", HubSpotSimulator)
