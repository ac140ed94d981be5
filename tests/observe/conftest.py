"""The store figures are read on both backends, as the store suite runs them."""

from tests.store.conftest import any_store, opener

__all__ = ["any_store", "opener"]
