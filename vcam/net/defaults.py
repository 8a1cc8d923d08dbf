"""Defaults of a call that both the library and the command line use (standard library only,
so the command line can show them without loading the network stack)."""

# The signaling server's port.
DEFAULT_PORT = 8765
# Where the peer goes without --sink: a call is for watching the other side.
DEFAULT_SINK = "window"
