"""Client: reproducible labelled datasets from Triton (numpy and tritonclient only, no torch)."""

from synthmed.client.async_client import AsyncSynthMedClient
from synthmed.client.client import SynthMedClient
from synthmed.client.core import RetryPolicy, parse_url
from synthmed.client.errors import (
    ClientError,
    ContractError,
    InferenceError,
    InvalidRequestError,
    InvalidURLError,
    ModelNotFoundError,
    ServerUnavailableError,
)
from synthmed.contract import Contract

__all__ = [
    "AsyncSynthMedClient",
    "ClientError",
    "Contract",
    "ContractError",
    "InferenceError",
    "InvalidRequestError",
    "InvalidURLError",
    "ModelNotFoundError",
    "RetryPolicy",
    "ServerUnavailableError",
    "SynthMedClient",
    "parse_url",
]
