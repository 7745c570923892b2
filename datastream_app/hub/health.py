"""Whether the hub can reach the database and the channel layer, and the probe that tells the layer's state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from channels.layers import BaseChannelLayer

logger = logging.getLogger("datastream_app.hub")

# A group nobody joins: sending to it tells whether the layer is reachable.
PROBE_GROUP = "datastream.probe"


class Health:
    """The two dependencies of a hub; ``on_change`` is called whenever either flips."""

    def __init__(self) -> None:
        self.layer_ok = False
        self.database_ok = False
        self.on_change: Callable[[Health], None] | None = None

    @property
    def serving(self) -> bool:
        """Both the database and the channel layer are reachable."""
        return self.layer_ok and self.database_ok

    def set(self, *, layer_ok: bool | None = None, database_ok: bool | None = None) -> None:
        """Record what was just observed; notify on a change."""
        before = (self.layer_ok, self.database_ok)
        if layer_ok is not None:
            self.layer_ok = layer_ok
        if database_ok is not None:
            self.database_ok = database_ok
        if (self.layer_ok, self.database_ok) != before and self.on_change is not None:
            self.on_change(self)

    async def probe_layer(self, layer: BaseChannelLayer) -> bool:
        """Send to an empty group: the layer is reachable iff that succeeds (recorded, and returned)."""
        # A subscriber's receive() just waits while the broker is gone (the
        # client reconnects by itself), so reachability is tested by sending.
        try:
            await asyncio.wait_for(layer.group_send(PROBE_GROUP, {"type": "datastream.probe"}), timeout=2.0)
        except Exception:  # noqa: BLE001 - any failure means the layer is unreachable now
            if self.layer_ok:
                logger.warning("hub: channel layer unreachable; serving from the database until it is back")
            self.set(layer_ok=False)
            return False
        if not self.layer_ok:
            logger.info("hub: channel layer reachable again")
        self.set(layer_ok=True)
        return True
