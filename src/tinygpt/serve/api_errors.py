"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for every
mistake a client can make, so OpenAI clients raise their usual errors: never a bare 500 for a
client's mistake, and pydantic's validation errors as one line that names the field.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinygpt.errors import TinyGPTError
from tinygpt.serve.worker import ServerBusy


class APIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return {"error": error}


def add_error_handlers(app: FastAPI) -> None:
    """Answer every exception a request can raise in OpenAI's shape."""
    handlers = (
        (APIError, _api_error),
        (RequestValidationError, _invalid_request),
        (TinyGPTError, _tinygpt_error),
        (ServerBusy, _busy),
        (StarletteHTTPException, _http_error),
    )
    for exception, handler in handlers:
        app.add_exception_handler(exception, handler)


async def _api_error(request: Request, err: APIError) -> JSONResponse:
    return err.response()


async def _invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
    return validation_error(err.errors()).response()


async def _tinygpt_error(request: Request, err: TinyGPTError) -> JSONResponse:
    return APIError(400, str(err)).response()


async def _busy(request: Request, err: ServerBusy) -> JSONResponse:
    return APIError(503, str(err), kind="server_error", code="server_busy").response()


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return APIError(err.status_code, str(err.detail)).response()


def validation_error(errors: Any) -> APIError:
    """The first of pydantic's errors, as one line that names the field."""
    error = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    location = _location(error)
    if union := _union_forms(errors, location):  # a field of several types: name them all
        param, forms = union
        return APIError(400, f"{param} has the wrong type; give {' or '.join(forms)}", param)
    param = ".".join(location) or None
    if error.get("type") == "json_invalid":
        return APIError(400, f"the body is not valid JSON ({error.get('msg')})")
    if error.get("type") == "extra_forbidden":
        return APIError(400, f"unknown field {param!r}; this server does not support it", param)
    if param is None:
        return APIError(400, f"the body must be a JSON object ({error.get('msg')})")
    return APIError(400, f"{param}: {error.get('msg')}", param)


def _location(error: dict[str, Any]) -> list[str]:
    return [str(part) for part in error.get("loc", ()) if part != "body"]


def _union_forms(errors: Any, location: list[str]) -> tuple[str, list[str]] | None:
    """(field, the forms it accepts) where the first error is in one form of a union field:
    pydantic puts the form in the location (`prompt.str`, `prompt.list[int].0`), one error per
    form; None for any other error."""
    for index, part in enumerate(location):
        if part in ("str", "int", "float", "bool") or "[" in part:
            head = location[:index]
            forms = {
                other[index]: None
                for other in map(_location, errors)
                if other[:index] == head and len(other) > index
            }
            return ".".join(head), list(forms)
    return None
