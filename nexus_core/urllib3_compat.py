"""The one use of urllib3 beyond its public API, behind a public-named seam.

Whether a request may be retried depends on its method: urllib3's ``Retry`` asks its private
``_is_method_retryable`` both for status retries (``is_retry``) and for read errors
(``increment``), and offers no public hook. :class:`MethodAwareRetry` overrides it once and asks
:meth:`MethodAwareRetry.method_retryable` instead, which subclasses implement
(:class:`nexus_core.retries.SharedRetry`: any method when the call carries an idempotency key).
``tests/contract/test_urllib3_contract.py`` checks that urllib3 still consults the private
method on both paths (also against the newest urllib3: ``tox -e contract-latest``).
"""

from __future__ import annotations

from urllib3.util import Retry


class MethodAwareRetry(Retry):
    """urllib3's ``Retry`` whose per-method decision is :meth:`method_retryable`."""

    def method_retryable(self, method: str) -> bool:
        """Whether ``method`` may be retried; by default urllib3's ``allowed_methods``."""
        return super()._is_method_retryable(method)

    def _is_method_retryable(self, method: str) -> bool:
        return self.method_retryable(method)
