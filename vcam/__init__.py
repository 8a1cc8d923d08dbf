"""vcam: a virtual camera that shows you as a few-shot neural talking-head avatar."""

__version__ = "0.1.0"
