"""Client: reproducible labelled datasets from Triton (numpy and tritonclient only, no torch)."""

from synthmed.client.async_client import AsyncSynthMedClient
from synthmed.client.client import SynthMedClient, parse_url
from synthmed.client.contract import Contract
from synthmed.client.errors import (
    ClientError,
    ContractError,
    InvalidRequestError,
    InvalidURLError,
    ModelNotFoundError,
    ServerUnavailableError,
)

__all__ = [
    "AsyncSynthMedClient",
    "ClientError",
    "Contract",
    "ContractError",
    "InvalidRequestError",
    "InvalidURLError",
    "ModelNotFoundError",
    "ServerUnavailableError",
    "SynthMedClient",
    "parse_url",
]
