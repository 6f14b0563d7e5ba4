"""Spec models of what happens when a job ends (issue 17): notifications, and chaining a
follow-up job on success. Run by the conductor once the job is terminal; the intent to run
them is stored with the job in the same transaction, so a crash cannot lose it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from podium.core.spec.base import NonBlankStr, SpecModel

MAX_NOTIFICATIONS = 16
MAX_CHAIN = 1000


class CommandNotification(SpecModel):
    type: Literal["command"] = "command"
    command: NonBlankStr = Field(
        description="bash command run in the workspace; the job summary is on its stdin "
        "(JSON) and in PODIUM_JOB_ID, PODIUM_JOB_STATUS, PODIUM_EVENT",
        examples=['echo "$PODIUM_JOB_ID $PODIUM_JOB_STATUS" >> jobs.log'],
    )
    timeout_seconds: float = Field(default=60, gt=0, le=600)


class WebhookNotification(SpecModel):
    type: Literal["webhook"] = "webhook"
    url: str = Field(
        pattern=r"^https?://\S+$",
        description="POSTed a JSON body: {event, job} (the job summary)",
        examples=["http://127.0.0.1:8080/podium"],
    )
    timeout_seconds: float = Field(default=10, gt=0, le=60)


class DesktopNotification(SpecModel):
    """A desktop notification through notify-send, when it is installed."""

    type: Literal["desktop"] = "desktop"


Notification = Annotated[
    CommandNotification | WebhookNotification | DesktopNotification,
    Field(discriminator="type"),
]


class Notifications(SpecModel):
    on_complete: list[Notification] = Field(
        default_factory=list,
        max_length=MAX_NOTIFICATIONS,
        description="when the job completes",
    )
    on_failure: list[Notification] = Field(
        default_factory=list, max_length=MAX_NOTIFICATIONS, description="when the job fails"
    )


class ChainSpec(SpecModel):
    """On success, the conductor submits another spec (often the same one again)."""

    submit: NonBlankStr = Field(
        description="the follow-up spec file: a template, relative to this spec's folder (the "
        "workspace for an inline spec); inside the workspace or that folder",
        examples=["next.yaml"],
    )
    max_chain: int = Field(
        default=1,
        ge=1,
        le=MAX_CHAIN,
        description="follow-ups at most in a chain started by a submitted job",
    )


HookName = Literal["on_complete", "on_failure", "on_success"]
