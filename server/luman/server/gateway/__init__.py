"""HTTP/JSON gateway: REST calls transcoded to the gRPC services, in the same process.

routes.py     google.api.http annotations -> RouteTable (path templates, body rules)
transcode.py  path + query + JSON body -> request message; response message -> JSON
in_process.py each call runs the method inside the server's interceptor chain, on its workers
status.py     gRPC status -> HTTP status and a google.rpc.Status JSON body
policy.py     security headers, CORS, client address behind trusted proxies
openapi.py    OpenAPI 3.1 document from the same descriptors and their comments
comments.py   proto comments, read from the descriptor set `make proto` writes
bodies.py     request bodies read with a size bound (JSON routes and the /device page)
app.py        the ASGI application tying these together (+ /healthz, /readyz, /openapi.json)
device_page.py the device login's approval page, /device (device_templates.py, static/)
provider_pages.py /device/providers/…: sign-in through an identity provider, and linking
server.py     uvicorn (httptools, uvloop) on its own thread; build_gateway() wires it up
"""

from __future__ import annotations

from luman.server.gateway.server import GatewayServer, build_gateway

__all__ = ["GatewayServer", "build_gateway"]
