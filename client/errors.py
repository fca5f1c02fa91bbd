"""The few errors a client user sees, each raised `from` the transport error behind it."""

from __future__ import annotations

from synthmed.errors import InvalidRequestError, SynthmedError, UserInputError


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


class InferenceError(ClientError):
    """The server answered and refused or failed the request (bad shape, an error inside the
    model): retrying would get the same answer, so it is raised at once."""


# Raised by the generation interface shared with the in-process runtimes (synthmed.contract).
__all__ = [
    "ClientError",
    "ContractError",
    "InferenceError",
    "InvalidRequestError",
    "InvalidURLError",
    "ModelNotFoundError",
    "ServerUnavailableError",
]
