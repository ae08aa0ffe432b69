"""Exec, Attach and PortForward streaming: the server behind the URLs those calls return, and clients.

Server side: StreamServer (server.py) mints single-use URLs and serves them over SPDY/3.1 (spdy.py,
spdyconn.py) and WebSocket (websocket.py, wsconn.py, channels.py); sessions run in remotecommand.py and
portforward.py against the node through the Protocols of backend.py. Client side: client.py (the API
`crib exec -it`, `crib attach`, `crib port-forward` and the tests use).
"""

from crib.streaming.backend import (
    Attachment,
    AttachRequest,
    Backend,
    Dialer,
    ExecRequest,
    Kind,
    PortForwardRequest,
    Process,
    StreamRequest,
)
from crib.streaming.server import StreamServer

__all__ = ["AttachRequest", "Attachment", "Backend", "Dialer", "ExecRequest", "Kind", "PortForwardRequest",
           "Process", "StreamRequest", "StreamServer"]
