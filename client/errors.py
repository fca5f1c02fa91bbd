"""The few errors a client user sees, each raised `from` the transport error behind it."""

from __future__ import annotations

from synthmed.errors import SynthmedError, UserInputError


class ClientError(SynthmedError):
    """Root of the client's errors."""


class InvalidURLError(UserInputError, ClientError):
    """A server URL that is not host:port (optionally with a grpc:// or http:// scheme)."""


class ServerUnavailableError(ClientError):
    """No server answered, after retries with backoff."""


class ModelNotFoundError(ClientError):
    """The server is up but does not serve the requested model (or it is not ready)."""


class ContractError(ClientError):
    """The served model's inputs or outputs are not synthmed's contract."""


class InvalidRequestError(UserInputError, ClientError):
    """A request the model cannot take: a missing, unknown or out-of-range class label, a label
    for a model without classes, a truncation that is not a finite number."""
