"""The standard connector suite against the Salesforce simulator: OAuth (the org id from the
``id`` URL, PKCE, a signed token answer, instance URLs), refresh without rotation and
``invalid_grant``, SOQL paging, resume after a kill, SystemModstamp deltas, a 429, Outbound
Messages routed by OrganizationId and answered with the SOAP ack, health through ``/limits``
— through the real worker path."""

from nexus_salesforce.simulator import SalesforceSimulator

from nexus_core.testing.suite import connector_suite

TestSalesforce = connector_suite("salesforce", simulator=SalesforceSimulator)
