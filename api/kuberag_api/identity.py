"""Who is calling: a verified client (its API key is in the client-keys file) or an unverified
caller known only by its IP address.

This is the identity every limit keys on (``rate_limit``) and that handlers read with
``identity_of(request)``:

- a key in ``X-API-Key`` or ``Authorization: Bearer <key>`` that the client-keys file lists is the
  verified client it names, with the client's own limit when the file gives one; the admin key is
  the verified client ``admin``;
- a key the server does not know is refused (401): a made-up key never becomes a fresh budget;
- no key: an unverified caller, limited by its IP address. The address is the TCP peer's, or,
  when the peer is one of ``rateLimit.trustedProxies``, the nearest untrusted address of its
  ``X-Forwarded-For`` (so callers behind an ingress neither share the ingress's budget nor choose
  their own address);
- a body ``user_id`` is not an identity: with ``rateLimit.perUser`` it only subdivides its
  caller's budget.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuberag_contract.config import (
    ApiConfig,
    ClientKeys,
    ConfigError,
    Limit,
    parse_client_keys,
    parse_network,
)

from kuberag_api.live_config import LiveConfig, WatchedFile, load_file

log = logging.getLogger("kuberag.identity")

ADMIN_CLIENT = "admin"
# Where the middleware leaves the resolved identity (Litestar's ``request.state`` is this dict).
STATE_KEY = "kuberag_identity"


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The caller of one request, as far as the server verified it."""

    ip: str
    """The caller's address: the TCP peer, or the client address a trusted proxy forwarded."""
    client: str | None = None
    """Name of the verified client (from the client-keys file; ``admin`` for the admin key);
    None for an unverified caller."""
    limit: Limit | None = None
    """The client's own limit from the client-keys file; None: the config file's default."""
    admin: bool = False
    """The admin key was presented."""

    @property
    def verified(self) -> bool:
        return self.client is not None

    @property
    def label(self) -> str:
        """How logs and problem details name the caller."""
        return f"client {self.client!r}" if self.client is not None else f"IP {self.ip}"


class UnknownClientKey(Exception):
    """A key was presented that the server does not know (answered 401)."""


def identity_of(connection: Any) -> ClientIdentity | None:
    """The identity the middleware resolved for this request (a Litestar Request or an ASGI scope);
    None on routes that are never limited (probes, metrics, the OpenAPI document)."""
    scope = connection.scope if hasattr(connection, "scope") else connection
    return scope.get("state", {}).get(STATE_KEY)


class ClientKeyStore:
    """The known keys (sha256 digest -> client), reloaded when the mounted Secret changes.

    A presented key is looked up by its sha256: a dict lookup on a digest the caller cannot steer,
    so no comparison time depends on how much of a real key was guessed. A bad file at start is
    an error (the pod must not start without its keys); a bad file later is refused and the last
    good keys stay, visible in ``/readyz`` detail and ``kuberag_client_keys_reload_errors_total``.
    """

    def __init__(self, keys: ClientKeys | None = None, *, path: Path | None = None,
                 admin_key: str | None = None) -> None:
        self.path = path
        self._file = WatchedFile(path) if path is not None else None
        self._admin_digest = hashlib.sha256(admin_key.encode()).digest() if admin_key else None
        self.last_error: str | None = None
        self.reloads = 0
        self._by_digest: dict[bytes, tuple[str, Limit | None]] = {}
        self._set(keys)

    @classmethod
    def from_file(cls, path: Path | None, admin_key: str | None = None) -> ClientKeyStore:
        if path is None:
            return cls(admin_key=admin_key)
        keys, _ = load_file(path, "client-keys file", parse_client_keys)
        return cls(keys, path=path, admin_key=admin_key)

    def _set(self, keys: ClientKeys | None) -> None:
        self._by_digest = {c.digest: (c.name, c.rate_limit) for c in (keys.clients if keys else ())}

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, key: str) -> ClientIdentity | None:
        """The identity of a presented key (``ip`` left empty), or None when it is unknown."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        known = self._by_digest.get(digest)
        if known is not None:
            return ClientIdentity(ip="", client=known[0], limit=known[1])
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return ClientIdentity(ip="", client=ADMIN_CLIENT, admin=True)
        return None

    def check(self) -> bool:
        """Reload the file if it changed; True when new keys were applied."""
        if self._file is None:
            return False
        try:
            raw = self._file.read_if_changed()
            if raw is None:
                return False
            keys = parse_client_keys(raw)
        except (OSError, ConfigError) as exc:
            self.last_error = f"{exc}; keeping the last good client keys ({len(self)})"
            log.error("refused the client-keys file: %s", self.last_error)
            return False
        self._set(keys)
        self.last_error = None
        self.reloads += 1
        log.info("client keys reloaded", extra={"clients": len(self)})
        return True

    @property
    def state(self) -> dict:
        detail: dict[str, Any] = {"clients": len(self), "source": str(self.path) if self.path else None,
                                  "reloads": self.reloads}
        if self.last_error:
            detail["error"] = self.last_error
        return detail


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IdentityResolver:
    """Resolves a request's ``ClientIdentity`` from its headers and peer address."""

    def __init__(self, keys: ClientKeyStore, live: LiveConfig) -> None:
        self.keys = keys
        self.live = live
        self._trusted: tuple[Network, ...] = ()
        self._trusted_peer: dict[str, bool] = {}
        self._on_config(live.config, live.config)
        live.subscribe(self._on_config)

    def _on_config(self, _old: ApiConfig, new: ApiConfig) -> None:
        self._trusted = tuple(parse_network(n) for n in new.rate_limit.trusted_proxies)
        self._trusted_peer = {}

    def _is_trusted(self, address: str) -> bool:
        known = self._trusted_peer.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = False
            else:
                known = any(ip in net for net in self._trusted)
            if len(self._trusted_peer) >= 4096:  # bounded: peers are proxies and pods, few
                self._trusted_peer.clear()
            self._trusted_peer[address] = known
        return known

    def client_ip(self, peer: str, forwarded_for: list[str]) -> str:
        """The caller's address: walk X-Forwarded-For from the right while each hop is a trusted
        proxy; the first untrusted address is the client (nginx's ``real_ip_recursive``)."""
        if not forwarded_for or not self._trusted or not self._is_trusted(peer):
            return peer
        client = peer
        for raw in reversed(",".join(forwarded_for).split(",")):
            hop = _strip_port(raw.strip())
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage from a hop we trust is not an address: keep the last good one
            client = hop
            if not self._is_trusted(hop):
                break
        return client

    def client_ip_of(self, scope: dict) -> str:
        forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
        peer = scope.get("client")
        return self.client_ip(peer[0] if peer else "unknown", forwarded)

    def resolve(self, scope: dict) -> ClientIdentity:
        """The identity of a request. Raises UnknownClientKey for a key the server does not know."""
        key = None
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                key = value.decode("latin-1").strip()
            elif name == b"authorization" and key is None:
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    key = token.strip()
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
        peer = scope.get("client")
        ip = self.client_ip(peer[0] if peer else "unknown", forwarded)
        if not key:
            return ClientIdentity(ip=ip)
        known = self.keys.lookup(key)
        if known is None:
            raise UnknownClientKey
        return ClientIdentity(ip=ip, client=known.client, limit=known.limit, admin=known.admin)


def _strip_port(hop: str) -> str:
    """``[2001:db8::1]:443`` -> ``2001:db8::1``; ``203.0.113.9:5000`` -> ``203.0.113.9``."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop
