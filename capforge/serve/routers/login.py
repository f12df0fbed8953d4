"""People's way past the API keys: a login form that sets a signed session cookie, and logout.
Only served when the server has keys."""

from __future__ import annotations

import html
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from capforge.serve.access import SESSION_COOKIE, SESSION_SECONDS, ApiKeys, RateLimit

# Wrong keys allowed per client address: a burst, then a trickle a second (guessing gains nothing).
FAILED_LOGIN_RATE, FAILED_LOGIN_BURST = 0.2, 5


def page(next_path: str, message: str = "") -> str:
    """The login form (plain HTML: nothing to load before it works)."""
    note = f'<p id="login-error" role="alert">{html.escape(message)}</p>' if message else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>capforge: log in</title>"
            "<meta name='viewport' content='width=device-width'></head><body style='font-family:sans-serif;"
            "max-width:24em;margin:4em auto'><h1>capforge</h1><p>This server needs an API key.</p>"
            f"{note}<form method='post' action='/login'><input type='hidden' name='next' "
            f"value='{html.escape(next_path, quote=True)}'><label>API key <input type='password' name='key' "
            "autocomplete='current-password' autofocus required></label> <button type='submit'>Log in</button>"
            "</form></body></html>")


def safe_next(path: str) -> str:
    """Where to go after logging in: a path on this server only (never another site)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/ui/"


def login_url(path: str) -> str:
    return f"/login?next={quote(safe_next(path), safe='/')}"


def router(keys: ApiKeys) -> APIRouter:
    """GET and POST /login, GET /logout."""
    routes = APIRouter(tags=["login"])
    failures = RateLimit(FAILED_LOGIN_RATE, FAILED_LOGIN_BURST)

    @routes.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def form(next: str = "/ui/") -> HTMLResponse:
        return HTMLResponse(page(safe_next(next)))

    @routes.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        try:
            fields = await request.form()
        except Exception:  # noqa: BLE001 - a body that is no form is a wrong login, not a 500
            fields = {}
        key, next_path = str(fields.get("key", "")), safe_next(str(fields.get("next", "/ui/")))
        address = request.client.host if request.client else "?"
        wait = failures.wait(address, spend=False)
        if wait:
            return HTMLResponse(page(next_path, f"Too many wrong keys from this address; try again in {wait} s."),
                                status_code=429, headers={"Retry-After": str(wait)})
        name = keys.name_of(key)
        if name is None:
            failures.wait(address)  # a wrong key spends one of the address's tries
            return HTMLResponse(page(next_path, "That is not one of this server's API keys."), status_code=401)
        answer = RedirectResponse(next_path, status_code=303)
        answer.set_cookie(SESSION_COOKIE, keys.session(name), max_age=SESSION_SECONDS, httponly=True,
                          samesite="lax", secure=request.url.scheme == "https")
        return answer

    @routes.get("/logout", include_in_schema=False)
    async def logout() -> RedirectResponse:
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(SESSION_COOKIE)
        return answer

    return routes
