"""Bearer-token authentication and the dependencies every ``/v1`` route shares.

With :attr:`~mississippi_tools.server.settings.ServerSettings.api_key` set, each request must send
``Authorization: Bearer <key>``; the comparison takes constant time. Without a key the service
only binds loopback addresses
(:meth:`~mississippi_tools.server.settings.ServerSettings.check_bind`).
"""

from __future__ import annotations

import secrets

from fastapi import Request

from mississippi_tools.server.errors import UnauthorizedError
from mississippi_tools.server.state import ServiceState
from mississippi_tools.vlm import MississippiVLM

__all__ = ["require_api_key", "require_vlm", "service_state"]


def service_state(request: Request) -> ServiceState:
    """The app's :class:`~mississippi_tools.server.state.ServiceState`."""
    state = request.app.state.service
    assert isinstance(state, ServiceState)
    return state


def check_api_key(request: Request, state: ServiceState) -> None:
    """Raise :class:`UnauthorizedError` unless the request carries the API key."""
    expected = state.settings.api_key
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "this server requires an API key: send 'Authorization: Bearer <key>' "
            "(MississippiVLM.connect(..., api_key=...), OpenAI(api_key=...))"
        )
    if not secrets.compare_digest(token.strip().encode(), expected.get_secret_value().encode()):
        raise UnauthorizedError("the API key is not valid for this server")


async def require_api_key(request: Request) -> None:
    """Dependency: the request must carry the API key (when the server has one)."""
    check_api_key(request, service_state(request))


async def require_vlm(request: Request) -> MississippiVLM:
    """Dependency: the loaded model (503 with ``Retry-After`` while loading or stopping)."""
    return service_state(request).require_vlm()
