"""Errors a user can cause, each with a stable code and a sentence naming the problem.

The CLI prints `error: <message>`; the API maps `code` to an HTTP status
(see `http_status`) and returns `{"error": {"code", "message"}}`.
"""

from __future__ import annotations


class FaceReasonError(Exception):
    """Base class for problems a user can fix; `str(exc)` is the sentence to show."""

    code = "bad_request"
    http_status = 400

    def __init__(self, message: str, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        if code:
            self.code = code
        if http_status:
            self.http_status = http_status


class MediaError(FaceReasonError):
    """The input file is missing, unreadable, unsupported or outside the limits."""

    code = "bad_media"
    http_status = 400


def user_message(exc: BaseException) -> str | None:
    """The sentence to show for an exception a user caused, or None for a bug."""
    from tools.assets import AssetError, AssetMissing

    if isinstance(exc, (FaceReasonError, AssetMissing, AssetError)):
        return str(exc)
    return None
