"""INT8 calibration sets and calibrators. Imports neither ``vcam`` nor ``engines``."""
