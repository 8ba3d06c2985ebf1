"""Moved to ops/harness (stack, images); this re-export goes once the tests import from there."""

from models.status import TERMINAL
from ops.harness.images import sample_png
from ops.harness.stack import API_KEY, ROOT, Stack, build_stack

__all__ = ["API_KEY", "ROOT", "TERMINAL", "Stack", "build_stack", "sample_png"]
