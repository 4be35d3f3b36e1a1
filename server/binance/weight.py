"""``X-MBX-USED-WEIGHT-1M`` on every Binance-shaped answer, errors included: always ``0``.

Binance tells a client the request weight its IP used in the current minute, and clients that
pace themselves read it (and back off as it nears 6,000). Transmute spends none of the client's
Binance weight: it answers from Redis, whatever was asked, so the honest figure is 0, and a
client pacing itself by it never slows down for us. (Transmute's own REST calls to Binance are
the messenger's, within its own budget.)
"""

from __future__ import annotations

from flask import Response, request

from server.binance.common import bp

HEADER = "X-MBX-USED-WEIGHT-1M"
# The Binance-shaped parts of the API: /api/v3/... and /sapi/v1/... (server/binance/system.py).
PREFIXES = ("/api/v3/", "/sapi/")


@bp.after_app_request
def used_weight(response: Response) -> Response:
    """Add the header to every answer under a Binance path (one hook for every view and error)."""
    if request.path.startswith(PREFIXES):
        response.headers[HEADER] = "0"
    return response
