"""Roll an alias back to the version it pointed at before the last promotion (``sifthinker model rollback``).

:func:`sifthinker.registry.model_versions.promote` records, on the promoted version, the version that held the alias
before it (tag ``previous.<alias>``). Rolling back reads that tag on the current holder and moves the
alias there, in one alias write after the history tag ``last_rollback.<alias> = "<from> -> <to>"`` on the
registered model. Idempotent: rolling back again while the alias still points where the last rollback
put it changes nothing (says so); a later promotion clears the marker, so the next rollback undoes that
promotion. To go back further than one step, promote the version you want.
"""

from __future__ import annotations

import logging

from sifthinker.config.run_config import RunConfig
from sifthinker.registry.model_versions import (
    CHAMPION,
    RegistryError,
    _client,
    _registered_model,
    _store_errors,
    _tracking_uri,
)

log = logging.getLogger(__name__)


def rollback(cfg_or_uri: RunConfig | str | None, name: str, alias: str = CHAMPION) -> dict:
    """Point ``alias`` of ``name`` back at its previous holder; returns ``{"name", "alias", "from", "to",
    "changed"}`` (``changed`` False when it was already rolled back)."""
    uri = _tracking_uri(cfg_or_uri)
    with _store_errors(uri):
        client = _client(uri)
        rm = _registered_model(client, uri, name)
        current = (rm.aliases or {}).get(alias)
        if current is None:
            raise RegistryError(f"{name}@{alias} is not set in {uri}: nothing to roll back")
        current = str(current)
        marker = (rm.tags or {}).get(f"last_rollback.{alias}")
        if marker and marker.split(" -> ")[-1] == current:
            log.info("%s@%s is already rolled back (%s)", name, alias, marker)
            return {"name": name, "alias": alias, "from": marker.split(" -> ")[0], "to": current, "changed": False}
        previous = (client.get_model_version(name, current).tags or {}).get(f"previous.{alias}")
        if previous in (None, "none"):
            raise RegistryError(f"{name}@{alias} is version {current}, which has no recorded previous {alias} "
                                "(it was the first): nothing to roll back to")
        have = {str(mv.version) for mv in client.search_model_versions(f"name = '{name}'")}
        if previous not in have:
            raise RegistryError(f"the previous {alias} of {name}, version {previous}, no longer exists in {uri}")
        client.set_registered_model_tag(name, f"last_rollback.{alias}", f"{current} -> {previous}")
        client.set_registered_model_alias(name, alias, previous)
    log.info("%s@%s rolled back: %s -> %s", name, alias, current, previous)
    return {"name": name, "alias": alias, "from": current, "to": previous, "changed": True}
