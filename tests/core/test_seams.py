"""The typed seams (nexus_core/seams.py): the store really is the SyncStore the engine relies on."""

import inspect

from nexus_core.seams import SyncStore
from nexus_core.store import Store
from nexus_core.store._changes import ChangeFeedMixin


def test_store_implements_every_sync_store_method_with_the_same_parameters():
    declared = {n for n, v in vars(SyncStore).items() if callable(v) and not n.startswith("_")}
    assert {"get_installation", "commit_page", "start_run"} <= declared
    for name in declared:
        # the change feed wraps the writes with (*args, **kwargs): check the method it wraps
        impl = next((vars(k)[name] for k in Store.__mro__
                     if name in vars(k) and k is not ChangeFeedMixin), None)
        assert impl is not None, f"Store lacks {name}, which the sync engine calls"
        wanted = list(inspect.signature(getattr(SyncStore, name)).parameters)
        got = list(inspect.signature(inspect.unwrap(impl)).parameters)
        assert got == wanted, f"Store.{name}{got} differs from SyncStore.{name}{wanted}"


def test_a_store_instance_has_the_url_the_installation_cache_keys_on(tmp_path):
    store = Store.from_url(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        assert store.url.startswith("sqlite:///") and "n.db" in store.url
    finally:
        store.close()
