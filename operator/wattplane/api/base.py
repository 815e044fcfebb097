"""The base model every wire type derives from.

Python attributes are snake_case, the Kubernetes wire format is camelCase: one alias generator does
the translation, and ``populate_by_name`` lets code construct models with Python names. Specs forbid
unknown fields (a typo in a policy must be an error, not a silently ignored knob); status models keep
them, because kopf stores its own bookkeeping beside ours.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Strict wire model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """Serialise for the API server: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LenientApiModel(ApiModel):
    """Wire model that tolerates fields it does not know (status blocks shared with kopf)."""

    model_config = ConfigDict(extra="ignore")
