import factory
from django.contrib.auth import get_user_model

from task_core.models import Brand, BrandMembership, Task


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    @factory.post_generation
    def password(obj, create, extracted, **kwargs):
        obj.set_password(extracted or "pw-123456")
        if create:
            obj.save()

    username = factory.Sequence(lambda n: f"user{n}")


class BrandFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Brand

    name = factory.Sequence(lambda n: f"Brand {n}")
    slug = factory.Sequence(lambda n: f"brand-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BrandMembership

    user = factory.SubFactory(UserFactory)
    brand = factory.SubFactory(BrandFactory)
    role = BrandMembership.Role.VIEWER


class TaskFactory(factory.django.DjangoModelFactory):
    """A task row as the hub would store it (no publish); use services.task_create for real."""

    class Meta:
        model = Task

    brand = factory.SubFactory(BrandFactory)
    task_type = "noop"
    status = Task.Status.QUEUED
    description = factory.Sequence(lambda n: f"task {n}")
    max_retries = 3
