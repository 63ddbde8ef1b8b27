"""A write sent to an API path without its trailing slash (``POST /tasks``) is answered as the
same write to the slashed path. Django's APPEND_SLASH can only redirect, and a 301 loses the
body (clients replay it as a GET) while under DEBUG it raises a 500 page instead; reads keep
Django's redirect, which browsers and clients follow without loss."""

from django.urls import is_valid_path
from django.utils.deprecation import MiddlewareMixin

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class AppendSlashForWritesMiddleware(MiddlewareMixin):
    """Placed before CommonMiddleware: it rewrites the path before any redirect is decided."""

    def process_request(self, request):
        path = request.path_info
        if request.method in SAFE_METHODS or path.endswith("/"):
            return
        urlconf = getattr(request, "urlconf", None)
        if not is_valid_path(path, urlconf) and is_valid_path(f"{path}/", urlconf):
            request.path_info = f"{path}/"
            request.path = f"{request.path}/"
            request.META["PATH_INFO"] = request.path_info
