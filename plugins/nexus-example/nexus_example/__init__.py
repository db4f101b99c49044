"""nexus-example: the Example provider for the Nexus Integration SDK.

This module is what the ``nexus`` entry point loads, so it stays cheap to import (the simulator,
which imports the test harness, is loaded only by ``nexus simulate`` and tests).
"""

from nexus_example.connector import ExampleConnector

__version__ = "0.1.0"
__all__ = ["ExampleConnector", "__version__"]
