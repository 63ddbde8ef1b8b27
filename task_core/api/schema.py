"""How drf-spectacular describes the task detail's registered sections: each by the serializer
its app registered (``register_detail_section(..., serializer=...)``), nullable."""

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_basic_type
from drf_spectacular.types import OpenApiTypes


class DetailSectionFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "task_core.api.serializers.DetailSectionField"

    def map_serializer_field(self, auto_schema, direction):
        serializer = self.target.section.serializer
        if serializer is None:
            return {**build_basic_type(OpenApiTypes.OBJECT), "nullable": True}
        component = auto_schema.resolve_serializer(serializer, direction)
        return {"allOf": [component.ref], "nullable": True}
