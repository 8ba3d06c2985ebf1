"""The HTTP surface: parse, authorize, call a service function. Never imports torch."""
