"""REST endpoints for emails, drafts and batch jobs (PROTOCOL §4): parse, call one service,
render. Status conflicts are 409, an unreadable mail source 502."""

from django.conf import settings
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from emails import selectors, services
from emails.models import (
    BatchJob,
    BatchKind,
    Classification,
    Draft,
    DraftStatus,
    Email,
    EmailStatus,
)
from emails.sources import MailSourceError
from reasonflow.api import BoundedListField, ModelSerializer, Serializer


class DraftOutputSerializer(ModelSerializer):
    class Meta:
        model = Draft
        fields = [
            "id",
            "email_id",
            "subject",
            "body",
            "requires_approval",
            "status",
            "rejection_reason",
            "error",
            "message_id",
            "sent_at",
            "created_at",
            "updated_at",
        ]


class EmailOutputSerializer(ModelSerializer):
    class Meta:
        model = Email
        fields = [
            "id",
            "thread_id",
            "subject",
            "sender",
            "recipient",
            "body",
            "received_at",
            "classification",
            "confidence",
            "classification_reasons",
            "status",
            "is_read",
            "created_at",
            "updated_at",
        ]


class EmailDetailOutputSerializer(EmailOutputSerializer):
    draft = serializers.SerializerMethodField()

    class Meta(EmailOutputSerializer.Meta):
        fields = [*EmailOutputSerializer.Meta.fields, "draft"]

    @extend_schema_field(DraftOutputSerializer(allow_null=True))
    def get_draft(self, email: Email) -> dict | None:
        draft = selectors.email_latest_draft(email=email)
        return None if draft is None else DraftOutputSerializer(draft).data


class BatchJobOutputSerializer(ModelSerializer):
    job_id = serializers.UUIDField(source="id")
    percentage = serializers.IntegerField()

    class Meta:
        model = BatchJob
        fields = [
            "job_id",
            "kind",
            "status",
            "total",
            "processed",
            "percentage",
            "succeeded",
            "failed",
            "errors",
            "email_ids",
            "created_at",
            "started_at",
            "finished_at",
        ]


class Pagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class EmailsApi(APIView):
    """Maps the domain's errors to HTTP: a status conflict is 409, a broken source 502."""

    def handle_exception(self, exc):
        if isinstance(exc, services.StatusConflict):
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        if isinstance(exc, MailSourceError):
            return Response(
                {"detail": f"The mail source could not be read: {exc}"},
                status=status.HTTP_502_BAD_GATEWAY,
            )
        return super().handle_exception(exc)

    def paginate(self, queryset, serializer_class) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(serializer_class.rows(queryset), self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)


# --- emails ---------------------------------------------------------------------------------


class EmailListApi(EmailsApi):
    @extend_schema_serializer(component_name="EmailListFilters")
    class FilterSerializer(Serializer):
        status = serializers.ChoiceField(choices=EmailStatus.choices, required=False)
        classification = serializers.ChoiceField(choices=Classification.choices, required=False)
        unread = serializers.BooleanField(required=False, allow_null=True, default=None)

    OutputSerializer = EmailOutputSerializer

    @extend_schema(parameters=[FilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        emails = selectors.email_list_for_user(user=request.user, **filters.validated_data)
        return self.paginate(emails, self.OutputSerializer)


class EmailDetailApi(EmailsApi):
    @extend_schema_serializer(component_name="EmailUpdateInput")
    class InputSerializer(Serializer):
        is_read = serializers.BooleanField()

    OutputSerializer = EmailDetailOutputSerializer

    @extend_schema(responses=OutputSerializer)
    def get(self, request, email_id):
        email = selectors.email_get_for_user(user=request.user, email_id=email_id)
        return Response(self.OutputSerializer(email).data)

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def patch(self, request, email_id):
        email = selectors.email_get_for_user(user=request.user, email_id=email_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        email = services.email_mark_read(email=email, **serializer.validated_data)
        return Response(self.OutputSerializer(email).data)


class EmailSyncApi(EmailsApi):
    @extend_schema_serializer(component_name="EmailSyncOutput")
    class OutputSerializer(Serializer):
        received = serializers.IntegerField()
        emails = EmailOutputSerializer(many=True)

    @extend_schema(
        request=None,
        responses={200: OutputSerializer, 502: OpenApiResponse(description="source unreadable")},
    )
    def post(self, request):
        emails = services.email_sync(user=request.user)
        return Response(self.OutputSerializer({"received": len(emails), "emails": emails}).data)


class EmailProcessApi(EmailsApi):
    OutputSerializer = EmailDetailOutputSerializer

    @extend_schema(request=None, responses={200: OutputSerializer, 409: OpenApiResponse()})
    def post(self, request, email_id):
        email = selectors.email_get_for_user(user=request.user, email_id=email_id)
        email = services.email_process(email=email)
        return Response(self.OutputSerializer(email).data)


# --- drafts ---------------------------------------------------------------------------------


class DraftListApi(EmailsApi):
    @extend_schema_serializer(component_name="DraftListFilters")
    class FilterSerializer(Serializer):
        status = serializers.ChoiceField(choices=DraftStatus.choices, required=False)
        email_id = serializers.UUIDField(required=False)

    OutputSerializer = DraftOutputSerializer

    @extend_schema(parameters=[FilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        drafts = selectors.draft_list_for_user(user=request.user, **filters.validated_data)
        return self.paginate(drafts, self.OutputSerializer)


class DraftDetailApi(EmailsApi):
    @extend_schema_serializer(component_name="DraftUpdateInput")
    class InputSerializer(Serializer):
        subject = serializers.CharField(max_length=998, required=False)
        body = serializers.CharField(max_length=100_000, required=False)

        def validate(self, attrs):
            if not attrs:
                raise serializers.ValidationError("Give a subject or a body to change.")
            return attrs

    OutputSerializer = DraftOutputSerializer

    @extend_schema(responses=OutputSerializer)
    def get(self, request, draft_id):
        draft = selectors.draft_get_for_user(user=request.user, draft_id=draft_id)
        return Response(self.OutputSerializer(draft).data)

    @extend_schema(
        request=InputSerializer, responses={200: OutputSerializer, 409: OpenApiResponse()}
    )
    def patch(self, request, draft_id):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        draft = services.draft_update(
            user=request.user, draft_id=draft_id, **serializer.validated_data
        )
        return Response(self.OutputSerializer(draft).data)


class DraftApproveApi(EmailsApi):
    """Approve and send; a transport failure answers 200 with the draft `failed` and its error."""

    OutputSerializer = DraftOutputSerializer

    @extend_schema(request=None, responses={200: OutputSerializer, 409: OpenApiResponse()})
    def post(self, request, draft_id):
        draft = services.draft_approve(user=request.user, draft_id=draft_id)
        return Response(self.OutputSerializer(draft).data)


class DraftSendApi(EmailsApi):
    """Retry sending a failed draft."""

    OutputSerializer = DraftOutputSerializer

    @extend_schema(request=None, responses={200: OutputSerializer, 409: OpenApiResponse()})
    def post(self, request, draft_id):
        draft = services.draft_retry(user=request.user, draft_id=draft_id)
        return Response(self.OutputSerializer(draft).data)


class DraftRejectApi(EmailsApi):
    @extend_schema_serializer(component_name="DraftRejectInput")
    class InputSerializer(Serializer):
        reason = serializers.CharField(
            max_length=2000, required=False, allow_null=True, allow_blank=True, default=None
        )

    OutputSerializer = DraftOutputSerializer

    @extend_schema(
        request=InputSerializer, responses={200: OutputSerializer, 409: OpenApiResponse()}
    )
    def post(self, request, draft_id):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reason = serializer.validated_data["reason"] or None
        draft = services.draft_reject(user=request.user, draft_id=draft_id, reason=reason)
        return Response(self.OutputSerializer(draft).data)


# --- batch jobs -----------------------------------------------------------------------------


class BatchStartedSerializer(Serializer):
    job_id = serializers.UUIDField(source="id")
    status = serializers.CharField()
    total = serializers.IntegerField()
    processed = serializers.IntegerField()


class BatchSyncApi(EmailsApi):
    OutputSerializer = BatchStartedSerializer

    @extend_schema(request=None, responses={202: OutputSerializer})
    def post(self, request):
        job = services.batch_job_start(user=request.user, kind=BatchKind.SYNC)
        return Response(self.OutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class BatchEmailsApi(EmailsApi):
    """Start a classify or process job over up to EMAILS_BATCH_MAX_IDS of the user's emails."""

    kind: BatchKind

    @extend_schema_serializer(component_name="BatchEmailsInput")
    class InputSerializer(Serializer):
        max_reported = 5  # unknown ids named in an error: the error body stays small

        # The length is checked before any item, so 100,000 ids cost no more than 101.
        email_ids = BoundedListField(
            child=serializers.UUIDField(),
            min_length=1,
            max_length=settings.EMAILS_BATCH_MAX_IDS,
            error_messages={"max_length": "At most {max_length} ids per batch."},
        )

        def validate_email_ids(self, value):
            missing = selectors.email_ids_missing_for_user(
                user=self.context["user"], email_ids=value
            )
            if missing:
                shown = ", ".join(str(email_id) for email_id in missing[: self.max_reported])
                more = len(missing) - self.max_reported
                suffix = f" and {more} more" if more > 0 else ""
                raise serializers.ValidationError(f"Unknown email ids: {shown}{suffix}.")
            return value

    OutputSerializer = BatchStartedSerializer

    @extend_schema(request=InputSerializer, responses={202: OutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data, context={"user": request.user})
        serializer.is_valid(raise_exception=True)
        job = services.batch_job_start(
            user=request.user, kind=self.kind, email_ids=serializer.validated_data["email_ids"]
        )
        return Response(self.OutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class BatchClassifyApi(BatchEmailsApi):
    kind = BatchKind.CLASSIFY


class BatchProcessApi(BatchEmailsApi):
    kind = BatchKind.PROCESS


class BatchJobListApi(EmailsApi):
    OutputSerializer = BatchJobOutputSerializer

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request):
        jobs = selectors.batch_job_list_for_user(user=request.user)
        return self.paginate(jobs, self.OutputSerializer)


class BatchJobDetailApi(EmailsApi):
    OutputSerializer = BatchJobOutputSerializer

    @extend_schema(responses=OutputSerializer)
    def get(self, request, job_id):
        job = selectors.batch_job_get_for_user(user=request.user, job_id=job_id)
        return Response(self.OutputSerializer(job).data)


class BatchJobCancelApi(EmailsApi):
    OutputSerializer = BatchJobOutputSerializer

    @extend_schema(request=None, responses={200: OutputSerializer, 409: OpenApiResponse()})
    def post(self, request, job_id):
        job = selectors.batch_job_get_for_user(user=request.user, job_id=job_id)
        return Response(self.OutputSerializer(services.batch_job_cancel(job=job)).data)
