"""Kubernetes LabelSelectors: the model and the matching rule, with the API server's semantics.

An absent selector matches everything; an empty selector (``{}``) matches everything too; a
selector with both ``matchLabels`` and ``matchExpressions`` needs all of them (logical AND).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import ConfigDict, Field, model_validator
from wattplane.api.base import ApiModel


class LabelSelectorRequirement(ApiModel):
    """One ``matchExpressions`` entry."""

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {
                        # The API server must refuse what the operator would refuse, or kubectl says
                        # "created" while the policy only ever shows InvalidSpec.
                        "rule": "(self.operator == 'In' || self.operator == 'NotIn')"
                        " == (has(self.values) && size(self.values) > 0)",
                        "message": "In and NotIn need at least one value; Exists and DoesNotExist take none",
                    }
                ]
            }
        }
    )

    key: str = Field(min_length=1)
    """Label key the requirement applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key's value is compared with ``values``."""
    values: list[str] = Field(default_factory=list)
    """Values for ``In``/``NotIn``; must be empty for ``Exists``/``DoesNotExist``."""

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this requirement."""
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values


class LabelSelector(ApiModel):
    """A standard Kubernetes label selector."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Exact key/value pairs that must all be present."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)
    """Set-based requirements that must all hold."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every part of the selector."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(req.matches(labels) for req in self.match_expressions)
