"""Switchboard's exceptions, all under one root.

SwitchboardError
├── UserFacingError        carries the sentence a person sees (``.text``)
│   ├── LLMError           the model could not answer (model, api_base, hint)
│   │   ├── LLMUnreachable the model's server could not be reached
│   │   ├── LLMTimeout     the model took longer than the configured timeout
│   │   └── LLMAuthError   the provider refused our credentials
│   ├── BadTemplate        a template a person or a workflow supplied cannot run (``.text``:
│   │                      why: a syntax error, an unknown name, a refused attribute)
│   └── LimitExceeded      bounded work broke its bound ("that template ran for more than 2 s")
├── AdapterError           a platform refused or failed a send (``.retry_after``, ``.permanent``)
└── ServiceError           an embedded or external service could not be started or reached
    └── ServiceUnavailable a service is down right now (``.service``: database, queue, …);
                           the caller refuses the request (HTTP 503) and stores nothing

Third-party exceptions (litellm, SDKs) are translated into these at their boundary module;
``chain`` walks what one wraps, as libraries wrap unevenly.
"""

from __future__ import annotations

from collections.abc import Iterator


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it (``raise … from``), or what it was raised while handling."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


class SwitchboardError(Exception):
    pass


class UserFacingError(SwitchboardError):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class LLMError(UserFacingError):
    def __init__(self, text: str, *, model: str, api_base: str | None = None) -> None:
        super().__init__(text)
        self.model = model
        self.api_base = api_base


class LLMUnreachable(LLMError):
    pass


class LLMTimeout(LLMError):
    pass


class LLMAuthError(LLMError):
    pass


class BadTemplate(UserFacingError):
    """A template cannot run as written; ``.text`` says why, without the template itself."""


class LimitExceeded(UserFacingError):
    """Work a person or a workflow supplied ran past a bound (time, memory, output, size);
    ``.text`` names the bound, e.g. "that template ran for more than 2 s and was stopped"."""


class AdapterError(SwitchboardError):
    def __init__(
        self, message: str, *, retry_after: float | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class ServiceError(SwitchboardError):
    pass


class ServiceUnavailable(ServiceError):
    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service
