"""nexus-hubspot: HubSpot CRM for the Nexus Integration SDK, with its own local simulator.

This module is what the ``nexus`` entry point loads, so it stays cheap to import (the
simulator, which imports the test harness, is loaded only by ``nexus simulate`` and tests).
"""

from nexus_hubspot.connector import PROVIDER, HubSpotConnector, __version__

__all__ = ["PROVIDER", "HubSpotConnector", "__version__"]
