"""How drf-spectacular describes task_core's own fields: the task detail's registered sections,
each by the serializer its app registered (``register_detail_section(..., serializer=...)``),
nullable; a task type, as the enum of the types served when the schema is built."""

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent, build_basic_type
from drf_spectacular.types import OpenApiTypes

from task_core.registry import all_task_types


class DetailSectionFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "task_core.api.serializers.DetailSectionField"

    def map_serializer_field(self, auto_schema, direction):
        serializer = self.target.section.serializer
        if serializer is None:
            return {**build_basic_type(OpenApiTypes.OBJECT), "nullable": True}
        component = auto_schema.resolve_serializer(serializer, direction)
        return {"allOf": [component.ref], "nullable": True}


class TaskTypeFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "task_core.api.serializers.TaskTypeField"

    def map_serializer_field(self, auto_schema, direction):
        resumable = self.target.resumable
        names = [spec.name for spec in all_task_types() if spec.resumable or not resumable]
        if not names:  # a server with no type (an enum may not be empty): nothing to list
            return {"type": "string", "description": "No task type is served."}
        # A component of our own: drf-spectacular's enum naming would give both sets one name.
        name = "ResumableTaskTypeEnum" if resumable else "TaskTypeEnum"
        component = ResolvedComponent(
            name=name,
            type=ResolvedComponent.SCHEMA,
            object=name,
            schema={
                "type": "string",
                "enum": names,
                "description": "A "
                + ("resumable " if resumable else "")
                + "task type this server serves (GET /tasks/types/).",
            },
        )
        auto_schema.registry.register_on_missing(component)
        if self.target.allow_blank:  # "" stands for "every type" (an alert rule's task_type)
            return {"oneOf": [component.ref, {"type": "string", "maxLength": 0}]}
        return component.ref
