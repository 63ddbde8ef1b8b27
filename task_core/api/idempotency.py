"""The ``Idempotency-Key`` header of every create endpoint (POST /tasks/, POST
/tasks/persistent-jobs/): its schema declaration and its one parser."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError

from megahub.inputs import InputRejected, check_text

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255  # Task.idempotency_key's column

IDEMPOTENCY_HEADER = OpenApiParameter(
    IDEMPOTENCY_KEY_HEADER,
    {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
    OpenApiParameter.HEADER,
    description=(
        "Same key + same brand returns the first task (200) instead of creating another. "
        f"At most {IDEMPOTENCY_KEY_MAX_LENGTH} characters (a longer key is a 400, never cut)."
    ),
)


def idempotency_key(request) -> str | None:
    """The request's key (surrounding spaces dropped), None without one; a key longer than the
    column or holding a NUL is a 400 naming the header: cutting it would make two different
    keys collide."""
    key = (request.headers.get(IDEMPOTENCY_KEY_HEADER) or "").strip()
    if not key:
        return None
    problem = None
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        problem = f"At most {IDEMPOTENCY_KEY_MAX_LENGTH} characters (got {len(key)})."
    else:
        try:
            check_text(key)
        except InputRejected as exc:
            problem = exc.args[0]
    if problem:
        raise ValidationError({IDEMPOTENCY_KEY_HEADER: [problem]})
    return key
