"""Keyword-only service functions the routers call: parse, check and plan a request, then create, read or cancel
what it names. Typed in (models/requests.py), typed out (models/views.py)."""
