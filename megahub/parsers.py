"""The JSON parser of every endpoint: DRF's, plus megahub's input rules on the parsed document
(megahub.inputs.check_json): nesting of at most MAX_JSON_DEPTH levels, no NUL character and no
lone surrogate in any key or string. A breach is a 400 naming the top-level field."""

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

from megahub.inputs import MAX_JSON_DEPTH, InputRejected, check_json


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nests deeper than {MAX_JSON_DEPTH} levels.")
        try:
            check_json(data)
        except InputRejected as exc:
            message, path = exc.args[0], exc.args[1] if len(exc.args) > 1 else ""
            if isinstance(data, dict) and path:
                raise ValidationError({path.split(".", 1)[0]: [message]})
            raise ParseError(f"JSON parse error - {message}")
        return data
