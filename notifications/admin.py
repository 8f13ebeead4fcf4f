"""Admin for the event stream: the read-only event store, the publish API's service keys, and
what the user admin borrows (the "Send test notification…" action and the online-connections
column)."""

import json
import uuid

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Q
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from notifications.events import EventPayloadError, EventType, build_payload, sample_data
from notifications.models import Event, ServiceKey
from notifications.realtime.presence import (
    PresenceUnavailable,
    presence_count_for_user,
    presence_counts_for_users,
)
from notifications.services import event_send_sample, service_key_issue, service_key_revoke


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "type", "user", "created_at"]
    list_filter = [("user", admin.RelatedOnlyFieldListFilter), "type", "created_at"]
    search_fields = ["user__email"]
    search_help_text = "An event id, a user's UUID, or part of a user's email."
    list_select_related = ["user"]
    readonly_fields = ["user", "event_id", "type", "data", "created_at"]

    def get_search_results(self, request, queryset, search_term):
        # Ids are numbers and user ids UUIDs: match each exactly when the term is one, instead
        # of comparing a number column with text (an error on PostgreSQL).
        term = search_term.strip()
        if term.isdigit():
            return queryset.filter(event_id=int(term)), False
        try:
            return queryset.filter(user_id=uuid.UUID(term)), False
        except ValueError:
            pass
        if term in EventType._value2member_map_:
            return queryset.filter(Q(type=term) | Q(user__email__icontains=term)), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# --- borrowed by the user admin --------------------------------------------------------------


def _samples() -> dict[str, str]:
    return {t.value: json.dumps(sample_data(t), indent=2) for t in EventType}


class SampleNotificationForm(forms.Form):
    event_type = forms.ChoiceField(
        label="Event type", choices=[(t.value, t.value) for t in EventType]
    )
    data = forms.CharField(
        label="Data (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "class": "vLargeTextField"}),
        help_text="Prefilled with a valid sample of the chosen type; leave empty for a fresh one.",
    )

    def clean(self):
        cleaned = super().clean()
        event_type, raw = cleaned.get("event_type"), (cleaned.get("data") or "").strip()
        cleaned["payload"] = None
        if event_type is None or not raw:
            return cleaned
        try:
            data = json.loads(raw)
        except ValueError as exc:
            self.add_error("data", f"Not valid JSON: {exc}")
            return cleaned
        try:
            build_payload(event_type, data)
        except EventPayloadError as exc:
            self.add_error("data", str(exc))
            return cleaned
        cleaned["payload"] = data
        return cleaned


@admin.action(description="Send test notification…")
def send_test_notification(modeladmin, request, queryset):
    """Ask for an event type and data, then publish it to every selected user."""
    users = list(queryset)
    if "apply" in request.POST:
        form = SampleNotificationForm(request.POST)
        if form.is_valid():
            event_type, payload = form.cleaned_data["event_type"], form.cleaned_data["payload"]
            with transaction.atomic():
                events = [
                    event_send_sample(user_id=user.id, event_type=event_type, data=payload)
                    for user in users
                ]
            try:
                online = presence_counts_for_users(user_ids=[user.id for user in users])
            except PresenceUnavailable:
                online = None
            for user, event in zip(users, events, strict=True):
                count = "unknown (no presence store)" if online is None else online[user.id]
                modeladmin.message_user(
                    request,
                    f"Sent {event.type} event #{event.event_id} to {user}; "
                    f"connections online: {count}.",
                    messages.SUCCESS,
                )
            return None
    else:
        first = EventType.EMAIL_RECEIVED.value
        form = SampleNotificationForm(initial={"event_type": first, "data": _samples()[first]})
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Send test notification",
        "opts": modeladmin.model._meta,
        "users": users,
        "form": form,
        "samples": _samples(),
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/notifications/send_test_notification.html", context)


class UserNotificationsAdminMixin:
    """For the user admin: the test-notification action and the user's live presence."""

    actions = [send_test_notification]

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        # A list page about to render (not a redirect, nor an action's own page): read the
        # presence of its users in one call, not once per row (a Redis round trip each, or a
        # timeout each while Redis is down). The template then iterates these same rows.
        changelist = (getattr(response, "context_data", None) or {}).get("cl")
        if changelist is not None and "online_connections" in changelist.list_display:
            users = list(changelist.result_list)
            try:
                online = presence_counts_for_users(user_ids=[user.pk for user in users])
            except PresenceUnavailable:
                online = None
            for user in users:
                user.online_connections_on_page = "?" if online is None else str(online[user.pk])
        return response

    @admin.display(description="Online connections")
    def online_connections(self, obj) -> str:
        on_page = getattr(obj, "online_connections_on_page", None)
        if on_page is not None:
            return on_page
        try:
            return str(presence_count_for_user(user_id=obj.pk))
        except PresenceUnavailable:
            return "?"

    @admin.display(description="Events")
    def event_history(self, obj) -> str:
        url = reverse("admin:notifications_event_changelist") + f"?user__id__exact={obj.pk}"
        return format_html('<a href="{}">Stored events of this user</a>', url)


# --- service keys of the publish API -----------------------------------------------------------


class ServiceKeyForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        choices=[(t.value, t.value) for t in EventType],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The event types this key may publish; none ticked: every type.",
    )

    class Meta:
        model = ServiceKey
        fields = ["name", "event_types"]

    def clean_event_types(self) -> list[str]:
        return sorted(self.cleaned_data["event_types"])


@admin.action(description="Revoke selected service keys")
def revoke_service_keys(modeladmin, request, queryset):
    revoked = sum(service_key_revoke(key=key) for key in queryset)
    modeladmin.message_user(request, f"Revoked {revoked} service key(s).", messages.SUCCESS)


@admin.register(ServiceKey)
class ServiceKeyAdmin(admin.ModelAdmin):
    """Keys are created here or by `create_service_key`; the secret is shown once, on the page
    that follows the add (never in a message: those travel in a cookie or the session)."""

    form = ServiceKeyForm
    list_display = ["name", "prefix", "allowed_types", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = [revoke_service_keys]

    @admin.display(description="Event types")
    def allowed_types(self, obj: ServiceKey) -> str:
        return ", ".join(obj.event_types) or "all"

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
        else:
            obj.shown_secret = service_key_issue(key=obj)

    def response_add(self, request, obj, post_url_continue=None):
        context = {
            **self.admin_site.each_context(request),
            "title": "Service key created",
            "opts": self.model._meta,
            "key": obj,
            "secret": obj.shown_secret,
        }
        response = TemplateResponse(
            request, "admin/notifications/service_key_created.html", context
        )
        response["Cache-Control"] = "no-store"
        return response
