"""The console's HTTP routes: each parses the request, calls one Console method, answers JSON or HTML.

Viewing is open; every POST is a change and carries the token in the X-Console-Token header.
A refused change answers {"error": "..."} with the status the Console's exception names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console.actions import MIN_DRIFT_PARTS, Console, ProposalRequest
from console.errors import NotFound
from console.line_view import TREND
from console.validate import body_object, check_size, field, only, query_int
from runtime.errors import DaadError
from runtime.optional import require

HERE = Path(__file__).parent
TOKEN_HEADER = "X-Console-Token"
PAGES = ("live", "calibrate", "review", "history", "teach")
NO_STORE = {"Cache-Control": "no-store"}
DRIFT_PARTS = 200  # the drift check's default: the last 200 parts
MAX_COLLECT = 100_000  # parts one collection may take: scores and names of a shift, a few MB


def build_app(console: Console) -> Starlette:
    """The console for one bundle; all state lives in `console`, reached through app.state."""
    require("jinja2", "the console's pages")  # before starlette.templating, whose ImportError names no package
    from starlette.templating import Jinja2Templates

    templates = Jinja2Templates(directory=HERE / "templates")

    def page(name: str):
        async def show(request: Request) -> Response:
            here = console.on_the_line()  # the pages are about the product on the line when they are loaded
            context = {"page": name, "pages": PAGES, "bundle": here.bundle.root, "product": here.name,
                       "has_line": console.line is not None, "has_products": console.products is not None,
                       "review_folders": console.review_folders(here), "token_header": TOKEN_HEADER}
            return templates.TemplateResponse(request, f"{name}.html", context)
        return show

    routes = [Route("/", page("live"))] + [Route(f"/{name}", page(name)) for name in PAGES[1:]] + [
        Route("/live.jpg", live_jpeg),
        Route("/api/live", live_state),
        Route("/api/collect", collection),
        Route("/api/collect", collect, methods=["POST"]),
        Route("/api/propose", propose, methods=["POST"]),
        Route("/api/proposals/{id:int}/plot.png", proposal_plot),
        Route("/api/save", save, methods=["POST"]),
        Route("/api/history", history),
        Route("/api/rollback", roll_back, methods=["POST"]),
        Route("/api/review", review),
        Route("/api/review/{id}.png", review_picture),
        Route("/api/review/{id}", mark, methods=["POST"]),
        Route("/api/drift", drift),
        Route("/api/products", products),
        Route("/api/product", change_product, methods=["POST"]),
        Route("/api/teach", teach_state),
        Route("/api/teach/take", teach_take, methods=["POST"]),
        Route("/api/teach/parts/{index:int}.jpg", teach_thumbnail),
        Route("/api/teach/fit", teach_fit, methods=["POST"]),
        Route("/api/teach/calibration.png", teach_plot),
        Route("/api/teach/save", teach_save, methods=["POST"]),
        Route("/api/teach/discard", teach_discard, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={DaadError: refused})
    app.state.console = console
    return app


async def refused(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 400))


def _console(request: Request) -> Console:
    return request.app.state.console


async def _change(request: Request, known: set[str]) -> tuple[Console, dict[str, Any]]:
    """The console and the JSON body of a change (at most MAX_BODY_BYTES, only `known` fields), once the
    token is checked: nobody without it makes the console read a body."""
    console = _console(request)
    console.authorise(request.headers.get(TOKEN_HEADER))
    declared = request.headers.get("content-length")
    check_size(declared, 0)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        check_size(declared, len(raw))
    body = body_object(bytes(raw))
    only(body, known)
    return console, body


# -- live ---------------------------------------------------------------------------------------------

async def live_state(request: Request) -> JSONResponse:
    console = _console(request)
    state = console.line.snapshot() if console.line is not None else {}
    here = console.on_the_line()
    active, problem = console.shown(here)
    products = console.products.state() if console.products is not None else None
    state.update(threshold=console.live_threshold(), has_line=console.line is not None, threshold_problem=problem,
                 products=products, bundle=str(here.bundle.root),
                 calibrated=None if active is None else {"created": active.created, "method": active.method,
                                                         "note": active.note, "saved_by": active.saved_by})
    return JSONResponse(state, headers=NO_STORE)


async def live_jpeg(request: Request) -> Response:
    line = _console(request).line
    pictured = None if line is None else await run_in_threadpool(line.frame_jpeg)
    if pictured is None:
        raise NotFound("no frame yet")
    outcome, image = pictured
    score = outcome.scored.score
    shown = {"X-Frame": str(outcome.frame.index), "X-Verdict": outcome.verdict,
             "X-Score": repr(score) if math.isfinite(score) else "", "X-Threshold": repr(outcome.threshold)}
    return Response(image, media_type="image/jpeg", headers={**NO_STORE, **shown})


# -- calibrate ----------------------------------------------------------------------------------------

async def collection(request: Request) -> JSONResponse:
    line = _console(request).line
    current = None if line is None else line.collection()
    if current is None:
        return JSONResponse({"wanted": 0, "collected": 0, "done": False}, headers=NO_STORE)
    return JSONResponse({"wanted": current.wanted, "collected": len(current.scores), "done": current.done},
                        headers=NO_STORE)


async def collect(request: Request) -> JSONResponse:
    console, body = await _change(request, {"parts"})
    parts = field(body, "parts", int, low=1, high=MAX_COLLECT)
    console.collect(parts)
    return JSONResponse({"collecting": parts})


async def propose(request: Request) -> JSONResponse:
    console, body = await _change(request, set(ProposalRequest.__dataclass_fields__))
    proposal = await run_in_threadpool(console.propose, ProposalRequest.from_dict(body))
    return JSONResponse(proposal.to_dict())


async def proposal_plot(request: Request) -> Response:
    proposal = _console(request).proposal(request.path_params["id"])
    return Response(proposal.plot_png, media_type="image/png")


async def save(request: Request) -> JSONResponse:
    console, body = await _change(request, {"proposal", "note", "saved_by"})
    record = await run_in_threadpool(console.save, field(body, "proposal", int), field(body, "note", str, ""),
                                     field(body, "saved_by", str, ""))
    return JSONResponse(record.to_dict())


# -- history and drift --------------------------------------------------------------------------------

async def history(request: Request) -> JSONResponse:
    console = _console(request)
    here = console.on_the_line()
    return JSONResponse({"product": here.name, "entries": await run_in_threadpool(console.history, here),
                         "active_problem": console.shown(here)[1]}, headers=NO_STORE)


async def roll_back(request: Request) -> JSONResponse:
    """{"file": ENTRY, "saved_by": WHO, "product": the one the page shows}: refused once another is on the line."""
    console, body = await _change(request, {"file", "saved_by", "product"})
    record = await run_in_threadpool(console.roll_back, field(body, "file", str), field(body, "saved_by", str, ""),
                                     field(body, "product", str, None))
    return JSONResponse(record.to_dict())


async def drift(request: Request) -> JSONResponse:
    parts = query_int(dict(request.query_params), "parts", DRIFT_PARTS, MIN_DRIFT_PARTS, TREND)
    return JSONResponse(await run_in_threadpool(_console(request).drift, parts))


# -- product changeover -------------------------------------------------------------------------------

async def products(request: Request) -> JSONResponse:
    return JSONResponse(_console(request).product_state(), headers=NO_STORE)


async def change_product(request: Request) -> JSONResponse:
    """{"action": "switch", "product": NAME, "by": WHO} or {"action": "rollback", "by": WHO}."""
    console, body = await _change(request, {"action", "product", "by"})
    message = await run_in_threadpool(console.change_product, body)
    return JSONResponse({"message": message, **console.product_state()})


# -- new product --------------------------------------------------------------------------------------

async def teach_state(request: Request) -> JSONResponse:
    return JSONResponse(_console(request).teach.state(), headers=NO_STORE)


async def teach_take(request: Request) -> JSONResponse:
    """{"name": PRODUCT, "source": "line" or a folder, "parts": N}: the teach begins by taking the parts."""
    console, body = await _change(request, {"name", "source", "parts"})
    await run_in_threadpool(console.teach.take, field(body, "name", str), field(body, "source", str),
                            field(body, "parts", int))  # fmt: skip
    return JSONResponse(console.teach.state())


async def teach_thumbnail(request: Request) -> Response:
    jpeg = _console(request).teach.thumbnail(request.path_params["index"])
    return Response(jpeg, media_type="image/jpeg", headers=NO_STORE)


async def teach_fit(request: Request) -> JSONResponse:
    """{"drop": [INDEX, ...]}: fit on the parts taken less those the technician dropped."""
    console, body = await _change(request, {"drop"})
    await run_in_threadpool(console.teach.fit, field(body, "drop", list, []))
    return JSONResponse(console.teach.state())


async def teach_plot(request: Request) -> Response:
    png = await run_in_threadpool(_console(request).teach.plot)
    return Response(png, media_type="image/png", headers=NO_STORE)


async def teach_save(request: Request) -> JSONResponse:
    console, _ = await _change(request, set())
    await run_in_threadpool(console.teach.save)
    return JSONResponse(console.teach.state())


async def teach_discard(request: Request) -> JSONResponse:
    console, _ = await _change(request, set())
    await run_in_threadpool(console.teach.discard)
    return JSONResponse(console.teach.state())


# -- review -------------------------------------------------------------------------------------------

async def review(request: Request) -> JSONResponse:
    """The frames of the product on the line waiting for review, newest first, of this run and earlier ones
    (`earlier`: from another run)."""
    console = _console(request)
    here = console.on_the_line()
    pending = await run_in_threadpool(lambda: console.review(here).pending())
    current = console.line.run_id if console.line is not None else None
    return JSONResponse([{**entry.to_dict(), "product": here.name, "earlier": entry.run_id != current}
                         for entry in pending], headers=NO_STORE)


async def review_picture(request: Request) -> Response:
    console = _console(request)
    review = await run_in_threadpool(lambda: console.review(console.on_the_line()))
    entry = await run_in_threadpool(review.find, request.path_params["id"])
    if entry is None:
        raise NotFound(f"frame {request.path_params['id']!r} is no longer kept for review")
    return FileResponse(review.picture_file(entry.id), media_type="image/png", headers=NO_STORE)


async def mark(request: Request) -> JSONResponse:
    console, body = await _change(request, {"label", "product"})
    copy = await run_in_threadpool(console.mark, request.path_params["id"], field(body, "label", str),
                                   field(body, "product", str, None))
    return JSONResponse({"copied_to": str(copy)})
