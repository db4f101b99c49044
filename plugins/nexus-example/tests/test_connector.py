"""The standard connector suite against the Example simulator: OAuth, refresh with rotation,
paging, resume after a kill, deltas, 429s, webhooks and health, through the real worker path
(a throwaway redis-server, a SQLite store, RQ workers, the web app)."""

from nexus_example import simulator

from nexus_core.testing.suite import connector_suite

TestExample = connector_suite(
    "example",
    simulator=simulator.ExampleSimulator,
)
