"""Domain errors; the API maps each to one HTTP status so bad input is a clear 4xx, never a 500."""


class BacklogError(Exception):
    status = 400


class NotFound(BacklogError):
    status = 404


class Forbidden(BacklogError):
    status = 403


class Conflict(BacklogError):
    """The request is valid but the ticket's state refuses it (wrong lifecycle step, same person, …)."""

    status = 409


class Invalid(BacklogError):
    status = 422


class TooLarge(BacklogError):
    status = 413


class UnsupportedType(BacklogError):
    status = 415
