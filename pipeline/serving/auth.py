"""The one way modelgate authenticates to an OpenAI-compatible endpoint: an API key as a bearer token."""

from __future__ import annotations


def auth_headers(api_key: str | None) -> dict[str, str]:
    """`Authorization: Bearer <key>` when there is a key, else no header at all."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
