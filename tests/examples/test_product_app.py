"""examples/product-app against the HubSpot simulator: a tenant signs in, clicks "Connect HubSpot",
goes through the connect link, the provider's consent page and the product's callback; a worker
backfills into the SQL sink; the product's page lists the tenant's records."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from falcon import testing

ROOT = Path(__file__).resolve().parents[2]
PROVIDER, STREAM = "hubspot", "contacts"


def _load_app():
    spec = importlib.util.spec_from_file_location("product_app",
                                                  ROOT / "examples" / "product-app" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def world(monkeypatch, tmp_path, redis_url):
    from nexus_hubspot.simulator import HubSpotSimulator

    from nexus_core import runtime
    from nexus_core.config import reset_settings
    from nexus_core.plugins import set_registry

    with HubSpotSimulator() as sim:
        sim.add_account("62515")
        env = {**sim.env(), "REDIS_URL": redis_url,
               "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'nexus.db'}",
               "NEXUS_KEY_FILE": str(tmp_path / "key"), "NEXUS_SINK": "sql",
               "NEXUS_PUBLIC_URL": "http://nexus.test", "PRODUCT_URL": "http://product.test",
               "PRODUCT_PROVIDER": PROVIDER, "PRODUCT_STREAM": STREAM}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        reset_settings()
        runtime.reset()
        previous = set_registry(None)
        try:
            yield sim
        finally:
            set_registry(previous)
            runtime.reset()
            reset_settings()


def test_a_tenant_connects_and_sees_its_synced_records(world):
    from nexus_core import IntegrationService
    from nexus_core.web import create_app
    from nexus_core.worker import NexusSimpleWorker, resolve_queues

    service = IntegrationService().initialize()
    product = testing.TestClient(_load_app().create(service))
    nexus = testing.TestClient(create_app(service.settings, service.store, service.redis,
                                          service.registry))
    login = product.simulate_post("/login", body="tenant=acme",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert login.status_code == 303
    cookie = {"Cookie": "tenant=acme"}
    home = product.simulate_get("/", headers=cookie)
    assert "not connected" in home.text and "Connect HubSpot" in home.text

    connect = product.simulate_post("/connect", headers=cookie)
    assert connect.status_code == 303
    link = urlsplit(connect.headers["location"])
    assert link.netloc == "nexus.test" and link.path == f"/integrations/{PROVIDER}/authorize"
    consent = nexus.simulate_get(link.path, query_string=link.query)
    assert consent.status_code == 302
    back = requests.get(consent.headers["location"] + "&account=62515",
                        allow_redirects=False, timeout=10)
    callback = urlsplit(back.headers["Location"])
    assert callback.netloc == "product.test" and callback.path == "/oauth/callback"
    landing = product.simulate_get(callback.path, query_string=callback.query, headers=cookie)
    assert landing.status_code == 200, landing.text
    assert "HubSpot connected" in landing.text and "62515" in landing.text

    NexusSimpleWorker(resolve_queues(None), connection=service.redis).work(
        burst=True, logging_level="WARNING")
    listing = product.simulate_get("/records", headers=cookie)
    shown = set(re.findall(r"<li id='r-([^']+)'>", listing.text))
    assert shown == world.expected_ids(STREAM, "62515") and len(shown) == 250
    # each contact is labelled by its email, read from the sink's copy of its properties
    assert len(re.findall(r"<li id='r-\d+'>[a-z]+\.\d+@example\.com</li>", listing.text)) == 250
    assert "active" in product.simulate_get("/", headers=cookie).text
    replay = product.simulate_get(callback.path, query_string=callback.query, headers=cookie)
    assert replay.status_code == 400 and "works once" in replay.text
