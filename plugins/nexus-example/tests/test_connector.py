"""The standard connector suite against the Example Widgets simulator: OAuth, refresh with
rotation, paging, resume after a kill, deltas, 429s, webhooks and health, through the real
worker path."""

from nexus_example.simulator import ExampleSimulator

from nexus_core.testing.suite import connector_suite

TestExample = connector_suite("example", simulator=ExampleSimulator)
