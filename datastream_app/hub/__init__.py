"""The fan-out hub: the one channel-layer subscription of a process.

Every change message arrives here once, is serialised once, and is offered to
each local subscription interested in its key. A subscription keeps at most one
pending frame per key (settings are state, not events), so a slow stream
coalesces to the latest values instead of growing a backlog.

Revisions are global and consecutive, so a gap shows a lost message: after a
short grace the hub reads what changed from the database. A periodic check
does the same for a lost *last* message, which no later revision reveals.

Pieces: ``registry`` (subscriptions and fan-out), ``cache`` (current entries and
frames of watched settings keys), ``resync`` (gaps and catch-up), ``health``
(database and layer reachability), ``revocation`` (streams of revoked tokens),
composed by ``core.Hub``. Nothing here knows gRPC: frames are built by a
function the edge injects, and close reasons are domain values.
"""

from datastream_app.hub.cache import FrameBuilder
from datastream_app.hub.core import Hub
from datastream_app.hub.subscription import CloseReason, Subscription

__all__ = ["CloseReason", "FrameBuilder", "Hub", "Subscription"]
