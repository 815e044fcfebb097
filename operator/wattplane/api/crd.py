"""Metadata that turns a kind's models into a CustomResourceDefinition."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "wattplane.io"
VERSION = "v1alpha1"


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry shown by ``kubectl get``."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class CrdInfo:
    """Names, scope and presentation of a custom resource kind."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    scope: str = "Cluster"
    printer_columns: tuple[PrinterColumn, ...] = field(default=())
    categories: tuple[str, ...] = ("wattplane",)

    @property
    def group(self) -> str:
        """API group of every wattplane kind."""
        return GROUP

    @property
    def version(self) -> str:
        """Served and stored version."""
        return VERSION

    @property
    def api_version(self) -> str:
        """``group/version`` as written in objects."""
        return f"{GROUP}/{VERSION}"

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``, the CRD object's name."""
        return f"{self.plural}.{GROUP}"
