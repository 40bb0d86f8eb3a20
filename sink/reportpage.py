"""The sink's report page: `GET /` serves the HTML report (merge/reports/html.py) of a run, read live from the store.

`GET /?run=R[&base=B]` shows run R (with its diff against run B); without `run`, the run the store saw last.
The page is read on the query API's thread, connection and per-run cache (sink/queries.py), so a reload
rebuilds nothing unless the run changed. On an empty store the page says how to point a kube-apiserver at this
sink (the banner `auditcov serve` prints).

The query token. When one is set the page needs it too, but a browser opening an address cannot send an
`Authorization` header. So the page takes it once in the address, `/?token=T`: the answer sets a cookie holding
it (HttpOnly, SameSite=Strict, Secure over TLS) and redirects to the same address without the token, which thus
stays out of the address bar and the history. Without a valid token the page answers 401 with a form asking for
it. `Authorization: Bearer T` works as on every query route.
"""

from __future__ import annotations

import hmac

import sqlite_utils
from aiohttp import web

from auditcov.merge.errors import StoreError
from auditcov.merge.reports.html import empty_document, render_page, store_document
from auditcov.sink.app import QUERY_TOKEN, SETTINGS
from auditcov.sink.queries import QUERIES

TOKEN_COOKIE = "auditcov_query_token"
#: The last page built: (run, base, the store's runs) -> (its RunData, the base's, the HTML).
PAGES = web.AppKey("report_pages", dict)
_ASK = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>auditcov: token required</title></head>
<body style="font: 15px system-ui, sans-serif; margin: 4em auto; max-width: 32em">
<h1 style="font-size: 20px">This sink's report needs its query token</h1>
<p>{problem}</p>
<form method="get" action="/"><input type="password" name="token" autofocus aria-label="query token"
 style="font: inherit; padding: 4px 8px; width: 20em"> <button type="submit">Open the report</button></form>
</body></html>"""


def setup_report_page(app: web.Application) -> None:
    """Serve the report page at `/` (called by `init_app`, after the query routes)."""
    app[PAGES] = {}
    app.router.add_get("/", report_page, name="report_page")


def _given_token(request: web.Request) -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return given.strip()
    return request.cookies.get(TOKEN_COOKIE)


def _matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


async def report_page(request: web.Request) -> web.Response:
    """GET /[?run=R]: the HTML report, or the token form, or the redirect that stores a token in a cookie."""
    app = request.app
    token = app[QUERY_TOKEN]
    if token:
        offered = request.query.get("token")
        if offered is not None:
            if not _matches(offered, token):
                return _ask("That token is not the sink's query token.")
            query = {key: value for key, value in request.query.items() if key != "token"}
            response = web.HTTPSeeOther(request.rel_url.with_query(query))
            response.set_cookie(TOKEN_COOKIE, offered, httponly=True, samesite="Strict", secure=request.secure)
            raise response
        if not _matches(_given_token(request), token):
            return _ask("Give the token from the sink's query_token_file once; the browser keeps it for this sink.")
    settings = app[SETTINGS]
    reader = app[QUERIES]
    pages = app[PAGES]  # only read and written on the query thread
    run, base = request.query.get("run") or None, request.query.get("base") or None
    base_url = f"{request.scheme}://{request.host}"

    def read(db: sqlite_utils.Database) -> str:
        runs = [row[0] for row in db.conn.execute("SELECT name FROM runs ORDER BY created_us DESC, name")]
        if not runs:
            from auditcov.sink.server import banner  # server.py imports this module's app: import it late

            return render_page(empty_document(banner(settings, base_url)), title="auditcov: no runs yet")
        chosen = run or runs[0]
        try:
            models = (reader.cache.get(db, chosen), None if base is None else reader.cache.get(db, base))
        except StoreError:  # no catalogue yet: store_document says so, and shows the code
            models = None
        # The page of a big run takes seconds to build: it is kept while the query cache holds the same models.
        key = (chosen, base, tuple(runs))
        kept = pages.get(key)
        if models is not None and kept is not None and kept[0] is models[0] and kept[1] is models[1]:
            return kept[2]
        document = store_document(db, chosen, base=base, load=reader.cache.get)
        document["live"] = {"runs": sorted(runs)}
        page = render_page(document, title=f"auditcov: {chosen}")
        if models is not None:
            pages.clear()  # one page at a time: it holds megabytes
            pages[key] = (*models, page)
        return page

    page = await reader.run(read)
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


def _ask(problem: str) -> web.Response:
    return web.Response(status=401, text=_ASK.format(problem=problem), content_type="text/html",
                        headers={"WWW-Authenticate": 'Bearer realm="auditcov"'})  # fmt: skip
