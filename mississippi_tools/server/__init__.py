"""The HTTP service: an OpenAI-compatible API plus task endpoints over one loaded model.

A web playground to try every task without code is served at ``/`` and ``/playground``
(:mod:`~mississippi_tools.server.playground`).

Run it with ``mississippi-tools serve`` or :func:`serve`; embed it with :func:`create_app`::

    from mississippi_tools.server import ServerSettings, serve

    serve(ServerSettings(model="h2oai/h2ovl-mississippi-800m", port=8090))

Needs the ``server`` extra: ``pip install "mississippi-tools[server,local]"``.
"""

from __future__ import annotations

from mississippi_tools.extras import require

for _package in (
    "fastapi",
    "uvicorn",
    "pydantic_settings",
    "prometheus_client",
    "python_multipart",
):
    require(_package, "server", purpose="the HTTP service")

from mississippi_tools.server.app import create_app, load_vlm  # noqa: E402
from mississippi_tools.server.run import Server, build_server, serve  # noqa: E402
from mississippi_tools.server.settings import InsecureBindError, ServerSettings  # noqa: E402

__all__ = [
    "InsecureBindError",
    "Server",
    "ServerSettings",
    "build_server",
    "create_app",
    "load_vlm",
    "serve",
]
