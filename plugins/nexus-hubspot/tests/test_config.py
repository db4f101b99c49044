"""An installation's config is checked when stored: the core's keys (streams, rate_limits) and
the connector's own (validate_config)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("config", "errors"), [
    ({"streams": ["contacts", "tickets", "2-1234567", "p_cars", "line_items"],
      "properties": {"contacts": ["email", "hs_lead_status"], "tickets": ["subject"]},
      "search_lag_seconds": 120, "deletions": False, "fetch_records_on_webhook": True,
      "rate_limits": {"requests_per_second": 17, "burst_size": 17,
                      "buckets": {"search": {"requests_per_second": 4}}},
      "label": "kept: keys the connector does not read are the application's"}, []),
    ({"streams": ["Contacts", "../x"]},
     ["unknown stream(s) Contacts, ../x; hubspot has: contacts, companies, deals (or any name "
      "matching [a-z][a-z0-9_]{0,62}|[0-9]{1,4}-[0-9]{1,12}|p_[a-z0-9_]{1,60})"]),
    ({"properties": ["email"]}, ["properties must be an object: object type -> list of "
                                 'property names, e.g. {"contacts": ["email", "firstname"]}']),
    ({"properties": {"contacts": "email", "NOPE!": ["x"], "deals": ["ok", "not ok"]}},
     ["properties.contacts must be a list of property names",
      "properties: 'NOPE!' is not a CRM object type",
      "properties.deals must be a list of property names"]),
    ({"search_lag_seconds": -1, "deletions": "no", "fetch_records_on_webhook": 1},
     ["search_lag_seconds must be a number of seconds from 0 to 86400",
      "deletions must be true or false", "fetch_records_on_webhook must be true or false"]),
])
def test_the_config_is_validated(nexus, config, errors):
    assert nexus.service.validate_connector_config("hubspot", config).errors == errors


def test_a_bad_config_is_refused_before_a_connect_link_exists(nexus):
    from nexus_core.errors import ConfigError

    with pytest.raises(ConfigError, match="search_lag_seconds"):
        nexus.service.create_connect_link("hubspot", "t1", "main",
                                          config={"search_lag_seconds": "a minute"})
