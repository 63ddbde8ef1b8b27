"""Filter pieces shared by every list: a bad filter value is a 400, never silently ignored
(an ignored filter answers a question the client did not ask)."""

import django_filters
from django import forms
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

TRUE_VALUES = {"true", "1", "yes", "on"}
FALSE_VALUES = {"false", "0", "no", "off"}


class StrictBooleanField(forms.Field):
    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in TRUE_VALUES:
            return True
        if text in FALSE_VALUES:
            return False
        raise forms.ValidationError(f'"{value}" is not a boolean; use true or false.')


class StrictBooleanFilter(django_filters.BooleanFilter):
    """``?flag=true|false`` (also 1/0, yes/no, on/off); anything else is a 400."""

    field_class = StrictBooleanField


class StrictOrderingFilter(OrderingFilter):
    """``?ordering=`` naming a field the view does not offer is a 400, not the default order."""

    def remove_invalid_fields(self, queryset, fields, view, request):
        valid = super().remove_invalid_fields(queryset, fields, view, request)
        invalid = [f for f in fields if f not in valid]
        if invalid:
            offered = sorted(
                {item[0] for item in self.get_valid_fields(queryset, view, {"request": request})}
            )
            raise ValidationError(
                {self.ordering_param: [f'"{invalid[0]}" is not one of {", ".join(offered)}.']}
            )
        return valid
