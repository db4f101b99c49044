"""nexus-slack: Slack for the Nexus Integration SDK, with its own local simulator.

This module is what the ``nexus`` entry point loads, so it stays cheap to import (the
simulator, which imports the test harness, is loaded only by ``nexus simulate`` and tests).
"""

from nexus_slack.connector import PROVIDER, SlackConnector, __version__

__all__ = ["PROVIDER", "SlackConnector", "__version__"]
