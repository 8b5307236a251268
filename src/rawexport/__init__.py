"""rawexport: a self-hostable, GrowingIO-compatible raw-data export service."""

__version__ = "0.1.0"
