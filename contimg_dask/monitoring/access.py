"""Who may read the dashboard: loopback addresses, and the access token a request carries."""

from __future__ import annotations

import hmac
import ipaddress

from tornado.web import RequestHandler

COOKIE = "contimg_token"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def presented_token(handler: RequestHandler) -> str | None:
    """The token a request carries (query, bearer header, or cookie)."""
    token = handler.get_query_argument("token", None)
    if token:
        return token
    header = handler.request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ")
    return handler.get_cookie(COOKIE)


def refuse_without_token(handler: RequestHandler, token: str | None) -> bool:
    """Answer 403 and return True when ``token`` is required and the request lacks it."""
    if token is None:
        return False
    presented = presented_token(handler)
    if presented is not None and hmac.compare_digest(presented, token):
        return False
    handler.set_status(403)
    handler.finish({"error": "access token required"})
    return True
