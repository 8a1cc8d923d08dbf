"""Landmark-only calls: the landmark codec and the receiver's jitter buffer, signaling,
control messages and the avatar exchange, the WebRTC connection (``connection``), the send
and playout paths (``send``, ``playout``), the call session (``call``) and its report, the
media built from the real-time runtime's stages (``media``) and the runner behind
`vcam call` (``call_runner``)."""
