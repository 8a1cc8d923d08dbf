"""Calls: the landmark codec, the receiver's jitter buffer and the shape basis they share."""
