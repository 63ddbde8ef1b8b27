"""JSON rendering that can take rows already written as JSON by the database.

``JSONRows`` holds a list page's rows as the JSON texts PostgreSQL wrote (compact, keys in the
serializer's order, strings escaped as ``json.dumps(ensure_ascii=False)`` escapes them:
``task_core.selectors.task_list_rows``). ``JSONRenderer`` writes them into the response as
they are, so the bytes equal DRF's rendering of the decoded rows without decoding and
re-encoding them; anything else that reads the data (the browsable API, an indented
rendering, ``response.data`` in tests) sees the decoded rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rest_framework import renderers


class JSONRows(Sequence):
    """A list of JSON object texts; reads as the decoded objects. ``verbatim``: the texts are
    exactly what ``json.dumps(row, ensure_ascii=False, separators=(",", ":"))`` writes (the
    renderer may splice them); otherwise they are decoded and rendered anew."""

    def __init__(self, texts: list[str], *, verbatim: bool):
        self.texts = texts
        self.verbatim = verbatim
        self._decoded: list | None = None

    def _rows(self) -> list:
        if self._decoded is None:
            self._decoded = [json.loads(text) for text in self.texts]
        return self._decoded

    def __getitem__(self, index):
        return self._rows()[index]

    def __len__(self) -> int:
        return len(self.texts)

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"JSONRows({self._rows()!r})"


class JSONRenderer(renderers.JSONRenderer):
    """DRF's JSONRenderer; a page whose ``results`` are ``JSONRows`` (the last key, compact
    output) gets the rows' texts spliced in: ``"results":[`` text ``,`` text ``]``, with U+2028
    and U+2029 escaped as DRF escapes them."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        rows = data.get("results") if isinstance(data, dict) else None
        if not isinstance(rows, JSONRows):
            return super().render(data, accepted_media_type, renderer_context)
        if (
            not rows.verbatim
            or next(reversed(data)) != "results"
            or self.get_indent(accepted_media_type, renderer_context or {}) is not None
            or self.ensure_ascii
            or not self.compact
        ):
            decoded = {**data, "results": list(rows)}
            return super().render(decoded, accepted_media_type, renderer_context)
        head = super().render({**data, "results": []}, accepted_media_type, renderer_context)
        if not head.endswith(b'"results":[]}'):  # pragma: no cover - DRF's own format
            decoded = {**data, "results": list(rows)}
            return super().render(decoded, accepted_media_type, renderer_context)
        body = ",".join(rows.texts).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        return b"".join((head[:-2], body.encode(), b"]}"))
