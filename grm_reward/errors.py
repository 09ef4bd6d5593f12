"""The one exception tree of grm-reward.

Every error the library raises on purpose derives from :class:`GRMError`::

    GRMError
    ├── ConfigError (ValueError)           a setting is wrong or settings contradict each other
    ├── InputError (ValueError)            a request is malformed: empty responses, wrong types, ...
    │   ├── PromptTooLongError             the rendered judge prompt does not fit the judge's context
    │   └── DataError                      a data file is missing, unreadable, or not in the expected format
    ├── TemplateError (ValueError)         a prompt template is missing placeholders or unknown
    ├── AllSamplesInvalidError             no judge sample could be read (only with on_all_invalid="raise")
    ├── DeadlineExceededError (TimeoutError)  the caller's deadline passed before the judge answered
    └── BackendError                       the generation engine failed
        ├── BackendUnavailableError        its dependencies or model files are missing (with an install hint)
        ├── BackendCapabilityError         it cannot do what the config asks (e.g. forced scoring)
        ├── BackendProtocolError           it broke the backend contract (wrong number of outputs, ...)
        └── GenerationError                a generation call failed after retries
            └── JudgeUnavailableError      the judge server keeps failing: calls fail fast until it recovers

Judge *output* never raises: an unreadable sample is data (see :mod:`grm_reward.parsing`).
Foreign exceptions (torch, HTTP clients, ...) are mapped onto this tree once, at the backend
boundary, with ``raise ... from exc`` so the original traceback is kept.
"""

from __future__ import annotations

__all__ = [
    "AllSamplesInvalidError",
    "BackendCapabilityError",
    "BackendError",
    "BackendProtocolError",
    "BackendUnavailableError",
    "ConfigError",
    "DataError",
    "DeadlineExceededError",
    "GRMError",
    "GenerationError",
    "InputError",
    "JudgeUnavailableError",
    "PromptTooLongError",
    "TemplateError",
]


class GRMError(Exception):
    """Base class of every error grm-reward raises on purpose."""


class ConfigError(GRMError, ValueError):
    """A configuration value is invalid, or two values contradict each other."""


class InputError(GRMError, ValueError):
    """A scoring request is malformed. ``index`` names the request in a batch, when known."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        self.index = index
        super().__init__(f"request {index}: {message}" if index is not None else message)


class PromptTooLongError(InputError):
    """The judge prompt (plus the generation budget) exceeds the judge model's context window."""


class DataError(InputError):
    """A data file (benchmark, SPCT items, trajectories) is missing, unreadable, or not in the expected format."""


class TemplateError(GRMError, ValueError):
    """A prompt template is unknown or lacks a required placeholder."""


class AllSamplesInvalidError(GRMError):
    """Every judge sample of a request was unreadable (raised only when configured to)."""


class DeadlineExceededError(GRMError, TimeoutError):
    """The caller's deadline (see :mod:`grm_reward.deadlines`) passed before the judge answered."""


class BackendError(GRMError):
    """The generation engine failed."""


class BackendUnavailableError(BackendError):
    """A backend's optional dependencies or model files are missing."""


class BackendCapabilityError(BackendError):
    """The backend cannot do what the configuration asks of it."""


class BackendProtocolError(BackendError):
    """The backend broke its contract: wrong number of outputs or samples, invalid filled scores."""


class GenerationError(BackendError):
    """A generation call failed (after any retries the backend makes)."""


class JudgeUnavailableError(GenerationError):
    """The judge server keeps failing: its circuit is open (or its retry budget spent), so calls fail
    fast instead of waiting for timeouts; ``retry_after`` says when the next probe goes through."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)
