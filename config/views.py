"""JSON error pages for the API and media URLs; HTML for the admin and everything else."""

from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

_CODES = {
    400: ("bad_request", "The request was malformed."),
    403: ("permission_denied", "You may not do that."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "This method is not allowed here."),
    413: ("request_too_large", "The request body is too large."),
    414: ("uri_too_long", "The URL is too long."),
    500: ("server_error", "Something went wrong on our side."),
}


def _wants_json(request) -> bool:
    return request.path.startswith(("/api/", "/m/")) or "application/json" in request.headers.get(
        "Accept", ""
    )


def not_found(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"code": "not_found", "detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _wants_json(request):
        return JsonResponse(
            {"code": "server_error", "detail": "Something went wrong on our side."}, status=500
        )
    return defaults.server_error(request)


def bad_request(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"code": "bad_request", "detail": "The request was malformed."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"code": "permission_denied", "detail": "You may not do that."}, status=403)
    return defaults.permission_denied(request, exception)


class JsonApiErrorsMiddleware:
    """Every error answer under ``/api/`` and ``/m/`` is JSON ``{code, detail}``, including the ones
    Django writes itself: with DEBUG on, the handler404/500 views are skipped for the technical HTML
    pages, and Django's own 405s are empty text. A DRF response rendered as anything but JSON keeps
    its ``{code, detail}`` when it has one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith(("/api/", "/m/"))
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            status = response.status_code
            data = getattr(response, "data", None)
            if isinstance(data, dict) and isinstance(data.get("code"), str):
                body = data
            else:
                code, detail = _CODES.get(status) or ("error", _phrase(status))
                body = {"code": code, "detail": detail}
            replacement = JsonResponse(body, status=status)
            for header in ("Allow", "Retry-After", "Content-Range", "WWW-Authenticate", "Vary"):
                if header in response:
                    replacement[header] = response[header]
            return replacement
        return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase + "."
    except ValueError:
        return "The request could not be completed."
