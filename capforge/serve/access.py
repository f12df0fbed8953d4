"""Who may use the server, and how often: named API keys, a login for people, a rate limit.

Crawlers send a key in the ``X-API-Key`` header (or ``Authorization: Bearer``); Bearcat_captcha
clients, which post a form to ``/`` and send no headers of their own, add ``?key=`` to the URL.
People open the page or ``/docs``, are sent to ``/login`` once, and carry a signed session cookie
from then on (a browser cannot add a header to a page's requests). Keys are compared in
constant time; each has a name, which ``/metrics`` counts requests under and the rate limit
(a token bucket per key and worker process) is kept by.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass, field

from capforge.errors import SettingsError

SESSION_COOKIE = "capforge_session"
SESSION_SECONDS = 12 * 3600
NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")


@dataclass(frozen=True)
class ApiKeys:
    """The server's keys by name (``{}``: no key needed, loopback only)."""

    keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        """``NAME:KEY`` pairs separated by commas, or one bare ``KEY`` (named ``default``)."""
        keys: dict[str, str] = {}
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            name, secret = entry.split(":", 1) if ":" in entry else ("default", entry)
            if not NAME.fullmatch(name):
                raise SettingsError(f"API key name {name!r}: names are 1-40 letters, digits, '_', '.' or '-'; "
                                    "give keys as NAME:KEY pairs separated by commas, or one KEY")
            if not secret:
                raise SettingsError(f"API key {name!r} is empty; give keys as NAME:KEY pairs separated by commas")
            if name in keys:
                raise SettingsError(f"API key name {name!r} is given twice; each crawler's key needs its own name")
            keys[name] = secret
        if len(set(keys.values())) != len(keys):
            raise SettingsError("two API key names share one key; give each name its own key")
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def name_of(self, secret: str) -> str | None:
        """The name of the key ``secret`` is, compared with every key in constant time."""
        found = None
        for name, key in self.keys.items():  # no early exit: the time taken tells nothing
            if hmac.compare_digest(secret.encode(), key.encode()):
                found = name
        return found

    def session(self, name: str, now: float | None = None) -> str:
        """A session cookie for ``name``, valid SESSION_SECONDS, signed with that name's key (so
        every worker process checks it alike, and changing the key ends its sessions)."""
        expires = int((now or time.time()) + SESSION_SECONDS)
        return f"{name}.{expires}.{self._signature(name, expires)}"

    def session_name(self, token: str, now: float | None = None) -> str | None:
        """The key name a session cookie was signed for, if it is genuine and not expired."""
        name, _, rest = token.partition(".")
        expires, _, signature = rest.partition(".")
        if name not in self.keys or not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        return name if hmac.compare_digest(signature, self._signature(name, int(expires))) else None

    def _signature(self, name: str, expires: int) -> str:
        return hmac.new(self.keys[name].encode(), f"session:{name}.{expires}".encode(), hashlib.sha256).hexdigest()


class RateLimit:
    """A token bucket per name: ``rate`` requests a second, in bursts of up to ``burst`` (default
    one second's worth, at least one). ``rate`` 0: no limit."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate, self.burst = rate, burst or max(1.0, rate)
        self.buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, when)

    def wait(self, name: str, spend: bool = True, now: float | None = None) -> int:
        """0 when ``name`` may go on (spending a token unless ``spend`` is False), else the whole
        seconds until it may."""
        if not self.rate:
            return 0
        now = time.monotonic() if now is None else now
        tokens, then = self.buckets.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1:
            if spend:
                self.buckets[name] = (tokens - 1, now)
            return 0
        self.buckets[name] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.rate))
