"""Shapes of the /tasks/scheduled/ API. Input serializers only check types and shapes; the
business checks (cron, time zone, task type, dates) live in the services."""

import re
from datetime import UTC

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from megahub.serializers import StrictInputSerializer
from task_core.api.serializers import JSONObjectField, TaskTypeField, UserRefSerializer
from task_core.models import Task
from task_scheduling import cron
from task_scheduling.models import (
    BlackoutWindow,
    Calendar,
    OneOffJob,
    PeriodicSchedule,
    ScheduleRun,
)

MAX_CATCHUP_WINDOW_S = 30 * 24 * 3600


class TaskRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    task_id = serializers.CharField()
    status = serializers.CharField()


@extend_schema_field(OpenApiTypes.INT)
class BrandCalendarField(serializers.PrimaryKeyRelatedField):
    """A calendar id of the request's brand; another brand's id is "not found" (400)."""

    def get_queryset(self):
        brand = self.context.get("brand")
        return Calendar.objects.for_brand(brand) if brand else Calendar.objects.none()


@extend_schema_field(
    {
        "type": "string",
        "pattern": cron.cron_pattern(),
        "description": "Five cron fields (minute hour day-of-month month day-of-week) or an "
        "@alias; a range's ends in order, and the expression must fire within "
        f"{cron.CRON_HORIZON_YEARS} years.",
    }
)
class CronExpressionField(serializers.CharField):
    """A cron expression; cron.cron_normalize (in the services) is its one validation."""

    def __init__(self, **kwargs):
        super().__init__(max_length=200, **kwargs)


# The names as a pattern, not an enum: a generated client would turn an enum into a class whose
# member names collide (Etc/GMT+0, Etc/GMT-0 and GMT0 all become GMT0).
TIMEZONE_PATTERN = (
    "^(?:" + "|".join(re.escape(name) for name in sorted(cron.iana_zone_names())) + ")$"
)


@extend_schema_field(
    {
        "type": "string",
        "pattern": TIMEZONE_PATTERN,
        "description": "An IANA time zone name (the tzdata package's list), e.g. Europe/Paris.",
    }
)
class TimezoneField(serializers.CharField):
    """An IANA time zone name, as cron.timezone_validate (in the services) accepts: the name
    alone (not trimmed: " UTC" is no name, as the pattern says)."""

    def __init__(self, **kwargs):
        super().__init__(max_length=64, trim_whitespace=False, **kwargs)


# --- periodic schedules -------------------------------------------------------------------
class ScheduleInputSerializer(StrictInputSerializer):
    name = serializers.CharField(
        max_length=200,
        required=False,
        help_text='Unique in the brand. Default: "<task_type> <cron_expression>".',
    )
    description = serializers.CharField(max_length=5000, allow_blank=True, required=False)
    task_type = TaskTypeField()
    context_data = JSONObjectField(required=False)
    priority = serializers.ChoiceField(choices=Task.Priority.choices, required=False)
    cron_expression = CronExpressionField()
    timezone = TimezoneField(required=False)
    enabled = serializers.BooleanField(required=False)
    calendar = BrandCalendarField(allow_null=True, required=False)
    overlap_policy = serializers.ChoiceField(
        choices=PeriodicSchedule.Overlap.choices, required=False
    )
    catchup_policy = serializers.ChoiceField(
        choices=PeriodicSchedule.CatchUp.choices, required=False
    )
    catchup_window_s = serializers.IntegerField(
        min_value=0, max_value=MAX_CATCHUP_WINDOW_S, required=False
    )
    dst_gap_policy = serializers.ChoiceField(
        choices=PeriodicSchedule.DstGap.choices, required=False
    )
    start_at = serializers.DateTimeField(allow_null=True, required=False)
    end_at = serializers.DateTimeField(allow_null=True, required=False)


class ScheduleSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True, help_text="`active` or `paused`.")
    cron_description = serializers.SerializerMethodField()
    next_run_local = serializers.SerializerMethodField()
    last_task = TaskRefSerializer(read_only=True, allow_null=True)
    created_by = UserRefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = PeriodicSchedule
        fields = [
            "id", "name", "description", "task_type", "context_data", "priority",
            "cron_expression", "cron_description", "timezone", "enabled", "status", "calendar",
            "overlap_policy", "catchup_policy", "catchup_window_s", "dst_gap_policy",
            "start_at", "end_at", "next_run_at", "next_run_local", "last_run_at", "last_task",
            "created_by", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_cron_description(self, schedule) -> str:
        return cron.cron_describe(schedule.cron_expression)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_run_local(self, schedule):
        if schedule.next_run_at is None:
            return None
        try:
            tz = cron.timezone_get(schedule.timezone)
        except cron.TimezoneInvalid:  # a stored zone no longer accepted: shown in UTC
            tz = UTC
        return schedule.next_run_at.astimezone(tz).isoformat()


class ScheduleRunSerializer(serializers.ModelSerializer):
    task = TaskRefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = ScheduleRun
        fields = ["id", "schedule", "fire_time", "outcome", "dst", "detail", "task", "created_at"]
        read_only_fields = fields


class ValidateCronInputSerializer(StrictInputSerializer):
    cron_expression = CronExpressionField()
    timezone = TimezoneField(default="UTC")
    count = serializers.IntegerField(min_value=1, max_value=100, default=5)
    dst_gap_policy = serializers.ChoiceField(
        choices=PeriodicSchedule.DstGap.choices, default=PeriodicSchedule.DstGap.SHIFT
    )
    after = serializers.DateTimeField(required=False, help_text="Start of the preview (now).")


class CronRunSerializer(serializers.Serializer):
    local = serializers.CharField(help_text="The run in the schedule's time zone (ISO 8601).")
    utc = serializers.CharField()
    scheduled_local = serializers.CharField(help_text="The wall time the expression matched.")
    dst = serializers.CharField(
        allow_null=True,
        help_text="`gap`: the wall time does not exist (spring-forward), the run is shifted "
        "to the first valid instant after it; `overlap`: the wall time is repeated "
        "(fall-back), the run happens at its first occurrence only.",
    )


class ValidateCronSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    cron_expression = serializers.CharField()
    timezone = serializers.CharField()
    description = serializers.CharField()
    next_runs = CronRunSerializer(many=True)


# --- calendars ------------------------------------------------------------------------------
class BlackoutWindowSerializer(serializers.ModelSerializer):
    class Meta:
        model = BlackoutWindow
        fields = ["id", "starts_at", "ends_at", "reason"]
        read_only_fields = ["id"]


class BlackoutWindowInputSerializer(StrictInputSerializer):
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    reason = serializers.CharField(max_length=200, allow_blank=True, default="")


@extend_schema_field(BlackoutWindowInputSerializer(many=True))
class BlackoutWindowsField(serializers.Field):
    """The whole set of windows, each complete even in a PATCH (the set is replaced): DRF would
    otherwise pass a partial update's "partial" down to every window."""

    def to_internal_value(self, data):
        windows = BlackoutWindowInputSerializer(data=data, many=True)
        windows.is_valid(raise_exception=True)
        return windows.validated_data


class CalendarInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=5000, allow_blank=True, required=False)
    blackout_windows = BlackoutWindowsField(required=False)


class CalendarSerializer(serializers.ModelSerializer):
    blackout_windows = BlackoutWindowSerializer(source="windows", many=True, read_only=True)

    class Meta:
        model = Calendar
        fields = ["id", "name", "description", "blackout_windows", "created_at", "updated_at"]
        read_only_fields = fields


class UpcomingQuerySerializer(StrictInputSerializer):
    refuse_unknown_fields = False  # the query string also holds e.g. ?brand=
    # "from" is a Python keyword: declared in __init__ below.
    to = serializers.DateTimeField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["from"] = serializers.DateTimeField()

    def validate(self, attrs):
        if attrs["to"] <= attrs["from"]:
            raise serializers.ValidationError({"to": ["Must be after from."]})
        if (attrs["to"] - attrs["from"]).days > 92:
            raise serializers.ValidationError({"to": ["The range is limited to 92 days."]})
        return attrs


class UpcomingRunSerializer(CronRunSerializer):
    schedule_id = serializers.IntegerField()
    schedule_name = serializers.CharField()
    task_type = serializers.CharField()
    timezone = serializers.CharField()
    blackout = serializers.BooleanField(help_text="Inside a blackout window: will not fire.")


class UpcomingSerializer(serializers.Serializer):
    truncated = serializers.BooleanField()
    runs = UpcomingRunSerializer(many=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["from"] = serializers.DateTimeField()
        self.fields["to"] = serializers.DateTimeField()


# --- one-off jobs -------------------------------------------------------------------------
class CronJobInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    task_type = TaskTypeField()
    context_data = JSONObjectField(required=False)
    priority = serializers.ChoiceField(choices=Task.Priority.choices, required=False)
    run_at = serializers.DateTimeField()


class CronJobSerializer(serializers.ModelSerializer):
    task = TaskRefSerializer(read_only=True, allow_null=True)
    created_by = UserRefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = OneOffJob
        fields = [
            "id", "name", "task_type", "context_data", "priority", "run_at", "status", "task",
            "created_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields
