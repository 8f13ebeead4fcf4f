"""/api/v1/ routes of emails, drafts and batch jobs; a trailing slash is optional."""

from django.urls import re_path

from emails import apis

UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

urlpatterns = [
    re_path(r"^emails/?$", apis.EmailListApi.as_view(), name="email-list"),
    re_path(r"^emails/sync/?$", apis.EmailSyncApi.as_view(), name="email-sync"),
    re_path(r"^emails/batch/?$", apis.BatchJobListApi.as_view(), name="batch-list"),
    re_path(r"^emails/batch/sync/?$", apis.BatchSyncApi.as_view(), name="batch-sync"),
    re_path(r"^emails/batch/classify/?$", apis.BatchClassifyApi.as_view(), name="batch-classify"),
    re_path(r"^emails/batch/process/?$", apis.BatchProcessApi.as_view(), name="batch-process"),
    re_path(
        rf"^emails/batch/(?P<job_id>{UUID})/?$",
        apis.BatchJobDetailApi.as_view(),
        name="batch-detail",
    ),
    re_path(
        rf"^emails/batch/(?P<job_id>{UUID})/cancel/?$",
        apis.BatchJobCancelApi.as_view(),
        name="batch-cancel",
    ),
    re_path(
        rf"^emails/(?P<email_id>{UUID})/?$", apis.EmailDetailApi.as_view(), name="email-detail"
    ),
    re_path(
        rf"^emails/(?P<email_id>{UUID})/process/?$",
        apis.EmailProcessApi.as_view(),
        name="email-process",
    ),
    re_path(r"^drafts/?$", apis.DraftListApi.as_view(), name="draft-list"),
    re_path(
        rf"^drafts/(?P<draft_id>{UUID})/?$", apis.DraftDetailApi.as_view(), name="draft-detail"
    ),
    re_path(
        rf"^drafts/(?P<draft_id>{UUID})/approve/?$",
        apis.DraftApproveApi.as_view(),
        name="draft-approve",
    ),
    re_path(
        rf"^drafts/(?P<draft_id>{UUID})/reject/?$",
        apis.DraftRejectApi.as_view(),
        name="draft-reject",
    ),
    re_path(
        rf"^drafts/(?P<draft_id>{UUID})/send/?$", apis.DraftSendApi.as_view(), name="draft-send"
    ),
]
