"""Contract tests for what nexus_core relies on in urllib3 and requests beyond their plain
public API: urllib3's ``Retry`` consults ``_is_method_retryable`` on both the status and the
read-error path (nexus_core.urllib3_compat), and requests' ``HTTPAdapter`` sends through the
``poolmanager`` that ``init_poolmanager`` leaves (nexus_core.http's shared pools). Run against
the newest releases by ``tox -e contract-latest``."""

import pytest
import requests
from urllib3.exceptions import ReadTimeoutError

from nexus_core.urllib3_compat import MethodAwareRetry


class Flag(MethodAwareRetry):
    allow = False

    def method_retryable(self, method):
        return self.allow


def _retry(allow):
    retry = Flag(total=3, read=3, status_forcelist={503}, allowed_methods=frozenset({"GET"}),
                 raise_on_status=False)
    retry.allow = allow
    return retry


def test_status_retries_ask_method_retryable():
    assert _retry(True).is_retry("POST", 503) is True
    assert _retry(False).is_retry("GET", 503) is False  # even a GET, when the seam says no


def test_read_error_retries_ask_method_retryable():
    error = ReadTimeoutError(None, "/", "read timed out")
    again = _retry(True).increment(method="POST", url="/", error=error)
    assert again.total == 2 and again.read == 2
    with pytest.raises(ReadTimeoutError):  # urllib3 re-raises: not retryable
        _retry(False).increment(method="GET", url="/", error=error)


def test_method_aware_retry_defaults_to_allowed_methods():
    retry = MethodAwareRetry(total=1, allowed_methods=frozenset({"GET"}), status_forcelist={503})
    assert retry.is_retry("GET", 503) and not retry.is_retry("POST", 503)
    assert isinstance(retry.new(), MethodAwareRetry)


def test_a_session_sends_through_the_manager_init_poolmanager_leaves():
    from urllib3 import PoolManager

    from nexus_core.http import _SharedPoolAdapter
    from nexus_core.testing.simulator import PagedRecords, SimulatorServer

    first, second = _SharedPoolAdapter(), _SharedPoolAdapter()
    assert isinstance(first.poolmanager, PoolManager)
    assert first.poolmanager is second.poolmanager  # one manager per process and settings
    with SimulatorServer(PagedRecords(total=10, page_size=10)) as server:
        for adapter in (first, second):
            with requests.Session() as session:
                session.mount("http://", adapter)
                answer = session.get(server.url + "/records?cursor=0&limit=10", timeout=5)
                assert answer.status_code == 200
        # both sessions went through the shared manager, on one kept-alive connection
        (key,) = first.poolmanager.pools.keys()
        pool = first.poolmanager.pools[key]
        assert pool.num_connections == 1 and pool.num_requests == 2
