"""nexus-salesforce: Salesforce for the Nexus Integration SDK, with its own local simulator.

This module is what the ``nexus`` entry point loads, so it stays cheap to import (the
simulator, which imports the test harness, is loaded only by ``nexus simulate`` and tests;
``defusedxml`` only when an Outbound Message arrives).
"""

from nexus_salesforce.connector import PROVIDER, SalesforceConnector, __version__

__all__ = ["PROVIDER", "SalesforceConnector", "__version__"]
