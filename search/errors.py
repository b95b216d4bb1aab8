"""Errors raised by the search library; each carries a message fit to show a user."""
from __future__ import annotations


class SearchError(Exception):
    """Base class for every error this library raises on purpose.

    ``str(error)`` is fit to show anyone, a public visitor included. ``internals`` holds what only the
    operator may see (paths, hosts, process ids, the underlying exception): the builder prints it,
    the app only logs it.
    """

    def __init__(self, message: str = "", *, internals: str | None = None):
        super().__init__(message)
        self.internals = internals

    def for_operator(self) -> str:
        """The message with its internals, for the command line and the server log."""
        return f"{self} ({self.internals})" if self.internals else str(self)


# What each InvalidImageError reason means, in words a person reads before the detail.
REASONS = {
    "refused_url": "This URL is not fetched",
    "download_error": "The image could not be downloaded",
    "too_large": "The image is too large",
    "corrupt": "The file is damaged or is not an image",
    "unsupported": "This kind of file cannot be used",
    "empty": "The file is empty",
    "read_error": "The file could not be read",
}


class InvalidImageError(SearchError, ValueError):
    """An image could not be used; ``reason`` is a short code for reports, ``detail`` says why in the app's own
    words (never a decoder's or the system's: those go in ``internals``, for the log)."""

    def __init__(self, reason: str, detail: str, *, internals: str | None = None):
        super().__init__(f"{REASONS.get(reason, 'The image cannot be used')}: {detail}", internals=internals)
        self.reason = reason
        self.detail = detail


class QueryError(SearchError, ValueError):
    """A query that cannot be answered as asked (empty text, unknown metric, ...)."""


class ServiceUnavailable(SearchError):
    """The server cannot answer now, through no fault of the request: the model is still loading, the default
    index is being built, the store does not answer, the public demo is full. HTTP callers get 503.

    ``retry_after``: the seconds after which asking again may well succeed (HTTP's Retry-After); None where
    the state lasts until the operator changes something (a build that failed, a full disk).
    """

    def __init__(self, message: str = "", *, retry_after: int | None = None, internals: str | None = None):
        super().__init__(message, internals=internals)
        self.retry_after = retry_after


class StoreError(SearchError):
    """The store is missing, damaged, locked, or does not match the model."""


class StoreUnavailableError(StoreError, ServiceUnavailable):
    """The store went away while in use: a Chroma server stopped answering, a disk filled up."""


class BuildInterrupted(StoreUnavailableError):
    """A build the store stopped mid-way, in the builder's words; ``reason`` is the store's own message and
    ``indexed`` how many images were written before (they are kept)."""

    def __init__(self, reason: StoreError, indexed: int):
        super().__init__(f"{reason} during the build. What was written so far is kept: once that is fixed, run the "
                         "same command again and it resumes where this build stopped.", internals=reason.internals)
        self.reason = str(reason)
        self.indexed = indexed


class ModelError(SearchError):
    """A model could not be loaded, or cannot do what was asked of it."""


class SourceError(SearchError):
    """A source of images (folder, dataset, URL list) cannot be read at all."""


class OfflineError(SearchError):
    """The Hugging Face Hub cannot be reached and what a build needs from it is not in the local cache.

    ``problem`` says what is missing, every one at once; ``steps``, what to do about each (no paths: the app
    shows them to visitors); ``str()`` says both.
    """

    def __init__(self, problem: str, steps: list[str], *, internals: str | None = None):
        super().__init__(f"{problem}.{_bullets(steps)}", internals=internals)
        self.problem = problem
        self.steps = steps

    def for_operator(self) -> str:
        """The problem with why the Hub is out of reach, then the steps."""
        why = f" ({self.internals})" if self.internals else ""
        return f"{self.problem}{why}.{_bullets(self.steps)}"


def _bullets(lines: list[str]) -> str:
    return "".join(f"\n  - {line}" for line in lines)
