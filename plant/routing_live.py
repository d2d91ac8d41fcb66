"""Routing rules changed while the line runs (HMI or editor) are noticed, checked and applied.

The controller calls `LiveRouting.poll` every second. A new version of config/routing.toml
(its content hash) is loaded with `plant.routing.load_rules`; valid rules go to the classifier
(the cells decided from then on use them) and an audit entry `routing.applied` says which
version took effect when. A file that does not validate changes nothing: the line keeps the
rules it has and alarm `config / routing.invalid` names the file and the error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Protocol

from plant.alarms import Alarms
from plant.config import ConfigError
from plant.domain import AlarmPriority
from plant.routing import ROUTING_FILE, RoutingRules, load_rules
from plant.store import utcnow

log = logging.getLogger(__name__)
ALARM_SOURCE = "config"
ALARM_CODE = "routing.invalid"


class RulesUser(Protocol):
    """Who decides by the rules (the classifier process)."""

    async def set_rules(self, rules: RoutingRules) -> None: ...


def file_version(path: Path) -> str | None:
    """The first 12 hex digits of the file's SHA-256 (None when it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return None


class LiveRouting:
    """The routing rules in use and the file version they came from."""

    def __init__(
        self, config_dir: Path, rules: RoutingRules, user: RulesUser, alarms: Alarms
    ) -> None:
        self.config_dir = config_dir
        self.path = config_dir / ROUTING_FILE
        self.rules = rules
        self.user = user
        self.alarms = alarms
        self.version = file_version(self.path)
        self._seen = self.version

    async def poll(self) -> None:
        """Apply the file if it changed since the last poll and validates."""
        seen = await asyncio.to_thread(file_version, self.path)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            rules = await asyncio.to_thread(load_rules, self.config_dir)
        except ConfigError as exc:
            message = f"{exc}; the line keeps routing by version {self.version}"
            log.error("%s", message)
            await asyncio.to_thread(
                self.alarms.raise_, ALARM_SOURCE, ALARM_CODE, message, AlarmPriority.high
            )
            return
        await self.user.set_rules(rules)
        old, self.rules, self.version = self.version, rules, seen
        log.warning("routing rules version %s in use from now on", seen)
        await asyncio.to_thread(self._applied, old)

    def _applied(self, old: str | None) -> None:
        store = self.alarms.store
        with store.begin() as s:
            store.audit(
                s,
                "system",
                "routing.applied",
                str(self.path),
                None if old is None else f"version {old}",
                f"version {self.version} in use from {utcnow().isoformat()}",
            )
        self.alarms.clear(ALARM_SOURCE, ALARM_CODE)
