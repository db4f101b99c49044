"""Credentials, key rotation and one-time OAuth states: the store's secrets."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from nexus_core.crypto import associated_data
from nexus_core.ids import check_id
from nexus_core.models import Credentials, Installation, utcnow
from nexus_core.store import schema as t
from nexus_core.store._base import (
    INTENTS,
    Conflict,
    ConnectLink,
    OAuthState,
    StoreBase,
    _aware,
    _check,
    state_hash,
)


class CredentialsMixin(StoreBase):
    """Credential reads and writes, key rotation, OAuth states (mixed into ``Store``)."""

    def get_credentials(self, tenant_id: str, install_id: str) -> Credentials | None:
        """The installation's decrypted credentials, None if it has none.
        NotFound if the installation does not exist for this tenant."""
        with self._tx(readonly=True) as conn:
            creds = self._read_credentials(conn, tenant_id, install_id)
            if creds is None:
                self._get(conn, tenant_id, install_id)
            return creds

    def save_credentials(self, tenant_id: str, install_id: str, credentials: Credentials) -> None:
        with self._tx() as conn:
            self._get(conn, tenant_id, install_id)
            self._put_credentials(conn, tenant_id, install_id, credentials)

    def connect_installation(
        self,
        tenant_id: str,
        install_id: str,
        provider: str,
        credentials: Credentials,
        *,
        account_id: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Installation:
        """The end of an OAuth flow, in one transaction: create or update the installation as
        ``active`` with the provider account id (and ``config`` when given), and store its
        credentials."""
        check_id("tenant_id", tenant_id)
        check_id("install_id", install_id)
        account_id = account_id or credentials.extra.get("account_id")
        now = utcnow()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(t.installations.c.provider).where(
                    self._where(t.installations, tenant_id, install_id)
                )
            ).first()
            if row is None:
                conn.execute(
                    sa.insert(t.installations).values(
                        tenant_id=tenant_id, install_id=install_id, provider=provider,
                        account_id=None if account_id is None else str(account_id),
                        status="active", config=json.dumps(config or {}, sort_keys=True),
                        created_at=now, updated_at=now, webhook_key=t.new_webhook_key(),
                    )
                )
            elif row.provider != provider:
                raise Conflict(
                    f"installation {install_id!r} of tenant {tenant_id!r} belongs to provider "
                    f"{row.provider!r}, not {provider!r}",
                    tenant_id=tenant_id, install_id=install_id,
                )
            else:
                values: dict[str, Any] = {"status": "active", "updated_at": now}
                if account_id is not None:
                    values["account_id"] = str(account_id)
                if config is not None:
                    values["config"] = json.dumps(config, sort_keys=True)
                conn.execute(
                    sa.update(t.installations)
                    .where(self._where(t.installations, tenant_id, install_id))
                    .values(**values)
                )
            self._put_credentials(conn, tenant_id, install_id, credentials)
            return self._get(conn, tenant_id, install_id)

    def credentials_summary(self, tenant_id: str, install_id: str) -> dict[str, Any] | None:
        """What an operator may see about stored credentials: never a secret."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(t.credentials).where(self._where(t.credentials, tenant_id, install_id))
            ).first()
            if row is None:
                self._get(conn, tenant_id, install_id)
                return None
            creds = self._read_credentials(conn, tenant_id, install_id)
        assert creds is not None
        return {
            "key_id": row.key_id,
            "version": row.version,
            "updated_at": _aware(row.updated_at),
            "token_type": creds.token_type,
            "has_access_token": creds.access_token is not None,
            "has_refresh_token": creds.refresh_token is not None,
            "has_api_key": creds.api_key is not None,
            "expires_at": creds.expires_at,
            "scopes": list(creds.scopes),
        }

    def rotate_keys(self, batch_size: int = 200) -> dict[str, int]:
        """Re-encrypt every credential and pending OAuth verifier under the primary key.
        Each batch is one transaction; running it again is harmless."""
        counts = {"rotated": 0, "current": 0}
        for table, column, purpose in (
            (t.credentials, "ciphertext", "credentials"),
            (t.oauth_states, "code_verifier", "oauth-state"),
        ):
            pk = [c for c in table.primary_key.columns]
            last: tuple[Any, ...] | None = None
            while True:
                query = sa.select(table).order_by(*pk).limit(batch_size)
                if last is not None:
                    query = query.where(sa.tuple_(*pk) > sa.tuple_(*last))
                with self._tx() as conn:
                    rows = conn.execute(query).all()
                    for row in rows:
                        sealed = getattr(row, column)
                        if sealed is None:
                            continue
                        if not self.keyring.needs_rotation(sealed):
                            counts["current"] += 1
                            continue
                        aad = associated_data(row.tenant_id, row.install_id, purpose)
                        fresh = self.keyring.encrypt(self.keyring.decrypt(sealed, aad), aad)
                        values = {column: fresh}
                        if table is t.credentials:
                            values["key_id"] = self.keyring.primary_id
                        conn.execute(
                            sa.update(table)
                            .where(sa.and_(*(c == getattr(row, c.name) for c in pk)))
                            .values(**values)
                        )
                        counts["rotated"] += 1
                if len(rows) < batch_size:
                    break
                last = tuple(getattr(rows[-1], c.name) for c in pk)
        return counts

    def key_usage(self) -> dict[str, int]:
        """How many credential rows each key id encrypts."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(t.credentials.c.key_id, sa.func.count()).group_by(t.credentials.c.key_id)
            ).all()
        return {r[0]: r[1] for r in rows}


    # -- OAuth states ----------------------------------------------------------------------

    def put_oauth_state(
        self,
        state: str,
        tenant_id: str,
        install_id: str,
        provider: str,
        *,
        redirect_uri: str,
        code_verifier: str | None,
        expires_at: datetime,
        config: dict[str, Any] | None = None,
        intent: str = "connect",
    ) -> None:
        check_id("tenant_id", tenant_id)
        check_id("install_id", install_id)
        _check(intent, INTENTS, "intent")
        sealed = None
        if code_verifier is not None:
            sealed = self.keyring.encrypt(
                code_verifier.encode(), associated_data(tenant_id, install_id, "oauth-state")
            )
        now = utcnow()
        with self._tx() as conn:
            # Expired states are garbage: prune them while we are here.
            conn.execute(sa.delete(t.oauth_states).where(t.oauth_states.c.expires_at < now))
            conn.execute(
                sa.insert(t.oauth_states).values(
                    state_hash=state_hash(state), tenant_id=tenant_id, install_id=install_id,
                    provider=provider, redirect_uri=redirect_uri, code_verifier=sealed,
                    created_at=now, expires_at=expires_at, intent=intent,
                    config=None if config is None else json.dumps(config, sort_keys=True),
                )
            )

    def consume_oauth_state(self, state: str) -> OAuthState | None:
        """Delete and return a stored state (even an expired one: the caller checks expiry).
        None when unknown or already consumed — a state works once, even under races."""
        with self._tx() as conn:
            where = t.oauth_states.c.state_hash == state_hash(state)
            row = conn.execute(sa.select(t.oauth_states).where(where)).first()
            if row is None or conn.execute(sa.delete(t.oauth_states).where(where)).rowcount != 1:
                return None
        verifier = None
        if row.code_verifier is not None:
            verifier = self.keyring.decrypt(
                row.code_verifier, associated_data(row.tenant_id, row.install_id, "oauth-state")
            ).decode()
        return OAuthState(
            tenant_id=row.tenant_id, install_id=row.install_id, provider=row.provider,
            redirect_uri=row.redirect_uri, code_verifier=verifier,
            expires_at=_aware(row.expires_at),
            config=None if row.config is None else json.loads(row.config),
            intent=row.intent or "connect",
        )

    # -- connect links ---------------------------------------------------------------------

    def put_connect_link(
        self,
        token: str,
        provider: str,
        tenant_id: str,
        install_id: str,
        *,
        intent: str,
        expires_at: datetime,
        config: dict[str, Any] | None = None,
        redirect_uri: str | None = None,
    ) -> None:
        """Store a connect link (only its token's hash: the token is a bearer secret)."""
        check_id("tenant_id", tenant_id)
        check_id("install_id", install_id)
        _check(intent, INTENTS, "intent")
        now = utcnow()
        with self._tx() as conn:
            conn.execute(sa.delete(t.connect_links).where(t.connect_links.c.expires_at < now))
            conn.execute(sa.insert(t.connect_links).values(
                token_hash=state_hash(token), provider=provider, tenant_id=tenant_id,
                install_id=install_id, intent=intent,
                config=None if config is None else json.dumps(config, sort_keys=True),
                redirect_uri=redirect_uri, created_at=now, expires_at=expires_at,
            ))

    def consume_connect_link(self, token: str, provider: str) -> ConnectLink | None:
        """Delete and return the connect link ``token`` names for ``provider`` — once: a
        second use, an unknown token or another provider's link is None (and a link for
        another provider stays unused). The caller checks expiry."""
        where = sa.and_(t.connect_links.c.token_hash == state_hash(token),
                        t.connect_links.c.provider == provider)
        with self._tx() as conn:
            row = conn.execute(sa.select(t.connect_links).where(where)).first()
            if row is None or conn.execute(sa.delete(t.connect_links).where(where)).rowcount != 1:
                return None
        return ConnectLink(
            provider=row.provider, tenant_id=row.tenant_id, install_id=row.install_id,
            intent=row.intent, config=None if row.config is None else json.loads(row.config),
            redirect_uri=row.redirect_uri, expires_at=_aware(row.expires_at),
        )

