"""The FastAPI app: thin routes over an ``Engine``, JSON errors, API keys, metrics, the web page.

Routes parse and check the request, call one Engine method and shape its answer; every failure
is a JSON ``{"error": "..."}`` with a 4xx status (a 500 only for a bug, never with a traceback).
"""

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from swagger_ui_bundle import swagger_ui_path

from tripletface import __version__
from tripletface.errors import GalleryError, GalleryUnavailable, TripletfaceError
from tripletface.service import schemas
from tripletface.service.engine import Engine, NotFoundError, WorkersLostError
from tripletface.service.keys import ApiKey, allows, scope_of
from tripletface.service.photos import NotAnImageError, TooLargeError
from tripletface.service.uploads import MissingFieldError, read_body

STATIC = Path(__file__).parent / "static"
_log = logging.getLogger("tripletface.service")


class _TextConvertor(PathConvertor):
    """A path parameter of any text, "/" and line breaks too (the route checks it)."""

    regex = r"[\s\S]*"


register_url_convertor("text", _TextConvertor())

# The most specific class first: an error gets the status of the first class it is an instance of.
_STATUS: tuple[tuple[type[TripletfaceError], int], ...] = (
    (NotFoundError, 404),
    (TooLargeError, 413),
    (NotAnImageError, 415),
    (MissingFieldError, 422),
    (GalleryUnavailable, 503),
    (WorkersLostError, 503),
    (GalleryError, 409),
    (TripletfaceError, 400),
)


@dataclass(frozen=True)
class Settings:
    """How the app serves: API keys (none: open), upload limit in bytes, CORS origins."""

    keys: list[ApiKey] | None = None
    max_upload: int = 20_000_000
    cors: list[str] = field(default_factory=list)


class _DeniedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _errors(*statuses: int) -> dict:
    return {status: {"model": schemas.Error} for status in statuses}


def _body(json_model: type[BaseModel], form_model: type[BaseModel]) -> dict:
    """OpenAPI for a body read by ``read_body``: multipart with a file, or JSON with base64."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": form_model.model_json_schema()},
                "application/json": {"schema": json_model.model_json_schema()},
            },
        }
    }


def _options(model: type[BaseModel], fields: dict) -> BaseModel:
    """The request's non-image fields as ``model``; MissingFieldError naming the first bad one."""
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise MissingFieldError(f"{where}: {first['msg']}") from None


def create_app(engine: Engine, settings: Settings | None = None) -> FastAPI:
    """The app serving ``engine`` (opened); its batching starts and stops with the app."""
    settings = settings or Settings()
    metrics = engine.metrics

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(
        title="tripletface",
        version=__version__,
        description="Enroll people from one photo each, then identify and verify faces.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    bearer = Depends(HTTPBearer(auto_error=False, description="an API key from --api-keys"))

    def scope(needed: str) -> list:
        """The dependencies of a route that needs a key of scope ``needed`` (none without keys,
        so that the OpenAPI schema only asks for keys when the server does)."""
        if settings.keys is None:
            return []

        def check(credentials: HTTPAuthorizationCredentials | None = bearer) -> None:
            if credentials is None:
                raise _DeniedError(401, "no API key: send the header 'Authorization: Bearer KEY'")
            found = scope_of(settings.keys, credentials.credentials)
            if found is None:
                raise _DeniedError(401, "the API key is not valid: check it, or ask for a new one")
            if not allows(found, needed):
                raise _DeniedError(403, f"this {found} key cannot do that: it needs a {needed} key")

        return [Depends(check)]

    read, write = scope("read"), scope("write")

    async def body(request: Request):
        return await read_body(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            settings.max_upload,
        )

    @app.get("/healthz", response_model=schemas.Health, responses=_errors(503), tags=["service"])
    async def healthz() -> schemas.Health:
        health = await engine.health()
        return schemas.Health(people=health.people, faces=health.faces, encoder=health.encoder)

    @app.get("/metrics", response_class=Response, tags=["service"])
    async def prometheus() -> Response:
        await engine.gauges()
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # {name:text}: a name may hold a "/" (sent as %2F, decoded before routing) or a line break.
    @app.post(
        "/v1/people/{name:text}/faces",
        status_code=201,
        response_model=schemas.Enrolled,
        responses=_errors(400, 401, 403, 409, 413, 415, 422, 503),
        openapi_extra=_body(schemas.EnrollJson, schemas.EnrollForm),
        dependencies=write,
        tags=["people"],
    )
    async def enroll(
        request: Request,
        name: Annotated[str, PathParam(min_length=1, max_length=100)],
        largest: bool = Query(False, description="enroll the largest face of several"),
    ) -> schemas.Enrolled:
        """Enroll one face of the photo as ``name`` (answered once committed)."""
        upload = await body(request)
        options = _options(schemas.EnrollOptions, upload.fields)
        ids = await engine.enroll(
            name, upload.image, upload.base64_text, largest or options.largest
        )
        return schemas.Enrolled(name=name, face_ids=ids)

    @app.post(
        "/v1/identify",
        response_model=schemas.Identified,
        responses=_errors(400, 401, 403, 409, 413, 415, 422, 503),
        openapi_extra=_body(schemas.ImageJson, schemas.ImageForm),
        dependencies=read,
        tags=["recognition"],
    )
    async def identify(request: Request) -> schemas.Identified:
        """Every face of the photo: its box, the nearest enrolled person (or null), the distance."""
        upload = await body(request)
        matches = await engine.identify(upload.image, upload.base64_text)
        return schemas.Identified(
            faces=[
                schemas.Face(
                    box=list(m.box), name=m.name, distance=m.distance, confidence=m.confidence
                )
                for m in matches
            ]
        )

    @app.post(
        "/v1/verify",
        response_model=schemas.Verified,
        responses=_errors(400, 401, 403, 404, 409, 413, 415, 422, 503),
        openapi_extra=_body(schemas.VerifyJson, schemas.VerifyForm),
        dependencies=read,
        tags=["recognition"],
    )
    async def verify(request: Request) -> schemas.Verified:
        """Is the person ``name`` in the photo?"""
        upload = await body(request)
        options = _options(schemas.VerifyOptions, upload.fields)
        result, threshold = await engine.verify(options.name, upload.image, upload.base64_text)
        return schemas.Verified(
            same=result.same,
            distance=result.distance,
            threshold=threshold,
            confidence=result.confidence,
        )

    @app.get(
        "/v1/people",
        response_model=list[schemas.Person],
        responses=_errors(401, 403, 503),
        dependencies=read,
        tags=["people"],
    )
    async def people() -> list[schemas.Person]:
        """Everyone enrolled, by name, with their number of faces."""
        return [schemas.Person(name=n, faces=count) for n, count in await engine.people()]

    @app.delete(
        "/v1/people/{name:text}",
        response_model=schemas.Removed,
        responses=_errors(401, 403, 404, 503),
        dependencies=write,
        tags=["people"],
    )
    async def remove(name: str) -> schemas.Removed:
        """Delete a person and all their faces."""
        return schemas.Removed(removed=await engine.remove(name))

    _handle_errors(app)
    if settings.cors:
        app.add_middleware(
            _Cors,
            allow_origins=settings.cors,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(_Observed, metrics=metrics)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # FastAPI's default page loads Swagger UI from a CDN; these files come with the package.
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="tripletface API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return app


def _handle_errors(app: FastAPI) -> None:
    """Every error as JSON {"error": one line}, with its status."""

    def answer(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(TripletfaceError)
    async def tripletface_error(_request: Request, error: TripletfaceError) -> JSONResponse:
        status = next(code for kind, code in _STATUS if isinstance(error, kind))
        return answer(status, str(error))

    @app.exception_handler(_DeniedError)
    async def denied(_request: Request, error: _DeniedError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"error": str(error)}, status_code=error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or str(first["loc"][0])
        return answer(422, f"{where}: {first['msg']}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 404:
            return answer(404, f"nothing at {request.url.path}: see /docs for the routes")
        if error.status_code == 405:
            return answer(405, f"{request.method} is not allowed on {request.url.path}: see /docs")
        return answer(error.status_code, str(error.detail))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, _error: ClientDisconnect) -> JSONResponse:
        # Not a bug of the server: nobody is left to read this answer, but metrics count it.
        return answer(400, f"the client left before the end of its {request.method} request")

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        _log.exception("internal error on %s %s", request.method, request.url.path)
        return answer(500, "internal error: the server logged it; please report it")


class _Cors(CORSMiddleware):
    """CORS for the --cors origins; a refused preflight gets the JSON error of any refusal."""

    def preflight_response(self, request_headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = response.body.decode()  # "Disallowed CORS origin, headers": what was refused
        headers = {k: v for k, v in response.headers.items() if k.startswith("access-control-")}
        return JSONResponse(
            {"error": f"{refused}: start the server with --cors ORIGIN for this web page"},
            status_code=400,
            headers=headers,
        )


class _Observed:
    """ASGI middleware counting every HTTP request by method, route template and status."""

    def __init__(self, app, metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe(
                scope["method"],
                _route_label(scope),
                status,
                time.perf_counter() - start,
            )


def _route_label(scope) -> str:
    """The template of the route that took the request, as the API documents it
    ("/v1/people/{name}"; "/{path}" for the page's files), never the path itself (a label per
    name would grow without end); "unmatched" when no route took it."""
    route = scope.get("route")  # FastAPI's routes put themselves there
    if route is not None:
        return route.path_format
    if isinstance(scope.get("endpoint"), StaticFiles):  # a mount: the page, the docs' files
        mounted = scope["root_path"][len(scope.get("app_root_path", "")) :]
        return f"{mounted}/{{path}}"
    return "unmatched"
