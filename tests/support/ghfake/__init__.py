"""A fake GitHub REST API for tests, checking every request against GitHub's OpenAPI description."""

from .openapi import Violation, load
from .server import FakeGitHub

__all__ = ["FakeGitHub", "Violation", "load"]
