"""ETSI GS QKD 014 V1.1.1 data formats (clause 6), with the spec's JSON field names.

Requests are validated strictly (a JSON string where a number is due, or an unknown
field, is a 400); responses leave out optional fields that are not set.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ErrorBody",
    "Key",
    "KeyContainer",
    "KeyIDEntry",
    "KeyIDsRequest",
    "KeyRequest",
    "Status",
]

# Extension parameters: the spec says "array of objects"; some clients send one object.
Extensions = list[dict[str, Any]] | dict[str, Any] | None


class KeyRequest(BaseModel):
    """Key request (clause 6.2): body of POST enc_keys."""

    model_config = ConfigDict(extra="forbid", strict=True)

    number: int | None = None
    size: int | None = None
    additional_slave_SAE_IDs: list[str] | None = None
    extension_mandatory: Extensions = None
    extension_optional: Extensions = None


class KeyIDEntry(BaseModel):
    """One entry of a Key IDs request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key_ID: str
    key_ID_extension: Any = None


class KeyIDsRequest(BaseModel):
    """Key IDs (clause 6.4): body of POST dec_keys."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key_IDs: list[KeyIDEntry]
    key_IDs_extension: Any = None


class Status(BaseModel):
    """Status (clause 6.1): what the KME can deliver to a master/slave SAE pair."""

    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_SAE_ID_count: int
    status_extension: Any = None


class Key(BaseModel):
    """One key of a key container: its UUID and its bytes in Base64."""

    key_ID: str
    key: str
    key_ID_extension: Any = None
    key_extension: Any = None


class KeyContainer(BaseModel):
    """Key container (clause 6.3): the answer to enc_keys and dec_keys."""

    keys: list[Key]
    key_container_extension: Any = None


class ErrorBody(BaseModel):
    """Error (clause 6.5): the body of every 400, 401 and 503."""

    message: str
    details: list[dict[str, Any]] | None = None
