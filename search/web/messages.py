"""What a person is told when something fails, and what the server log keeps of it."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from search.errors import SearchError
from search.web import views

log = logging.getLogger(__name__)
BUG = "Something went wrong on our side; the server log has the details."
Handler = TypeVar("Handler", bound=Callable[..., Any])


def public_message(where: str, exc: Exception) -> str:
    """What a person is told of ``exc``, raised in ``where`` (call it while handling ``exc``); the log
    gets one line for a refused input, and the traceback only for an unexpected error (a bug)."""
    if isinstance(exc, SearchError):
        log.info("refused in %s: %s", where, exc.for_operator())
        return str(exc)
    log.exception("unexpected error in %s", where)
    return BUG


def user_errors(fn: Handler) -> Handler:
    """Show library errors as a message in the UI and an error to API callers; hide internals."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(public_message(fn.__qualname__, exc), print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def refusals_in(output: str) -> Callable[[Handler], Handler]:
    """For handlers with named outputs: a refusal becomes a message in ``output``, and the other outputs stay
    as they are (a bug is logged with its traceback and gets the generic message)."""

    def decorate(fn: Handler) -> Handler:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                return {output: views.problem(public_message(fn.__qualname__, exc))}

        return wrapper  # type: ignore[return-value]

    return decorate
