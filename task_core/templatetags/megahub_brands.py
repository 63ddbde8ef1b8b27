"""Template tags of the browsable API: the brand switcher (a browser names the brand with
``?brand=<id>``, the fallback of the X-Brand-ID header)."""

from django import template

from task_core.models import Brand

register = template.Library()


@register.simple_tag(takes_context=True)
def user_brands(context, request):
    """The active brands the user is a member of; sets ``current_brand_id`` in the context."""
    user = getattr(request, "user", None)
    if not (user and user.is_authenticated):
        return []
    brand = getattr(request, "brand", None)
    raw = request.headers.get("X-Brand-ID") or request.GET.get("brand")
    context["current_brand_id"] = brand.pk if brand else (int(raw) if str(raw).isdigit() else None)
    return list(Brand.objects.filter(memberships__user=user, is_active=True).order_by("name", "pk"))
