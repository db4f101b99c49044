"""The standard connector suite against the HubSpot simulator: OAuth (hub_id, PKCE), refresh
without rotation and BAD_REFRESH_TOKEN, paging, resume after a kill, search-API deltas, 429s,
v3 webhooks routed by portalId, health — through the real worker path."""

from nexus_hubspot.simulator import HubSpotSimulator

from nexus_core.testing.suite import connector_suite

TestHubspot = connector_suite("hubspot", simulator=HubSpotSimulator)
