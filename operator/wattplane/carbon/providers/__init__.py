"""One module per carbon API, all producing :class:`~wattplane.carbon.model.IntensityReading`.

Providers do one fetch and raise :mod:`wattplane.carbon.errors` on trouble; caching, retries,
staleness and fallbacks belong to :class:`wattplane.carbon.service.CarbonService`.
"""

from wattplane.carbon.providers.base import Provider, ProviderContext, request_timeout
from wattplane.carbon.providers.carbonaware import CarbonAwareSdkProvider
from wattplane.carbon.providers.electricitymaps import ElectricityMapsProvider
from wattplane.carbon.providers.tracefile import TraceProvider
from wattplane.carbon.providers.ukcarbon import UkCarbonIntensityProvider
from wattplane.carbon.providers.watttime import WattTimeProvider

__all__ = [
    "CarbonAwareSdkProvider",
    "ElectricityMapsProvider",
    "Provider",
    "ProviderContext",
    "TraceProvider",
    "UkCarbonIntensityProvider",
    "WattTimeProvider",
    "build_provider",
    "request_timeout",
]


def build_provider(name: str, ctx: ProviderContext) -> Provider:
    """Instantiate the provider called ``name`` (``SourceConfig.provider``)."""
    from wattplane.carbon.errors import CarbonConfigError

    classes: dict[str, type[Provider]] = {
        "electricitymaps": ElectricityMapsProvider,
        "watttime": WattTimeProvider,
        "ukcarbon": UkCarbonIntensityProvider,
        "carbon-aware-sdk": CarbonAwareSdkProvider,
        "trace": TraceProvider,
    }
    try:
        cls = classes[name]
    except KeyError:
        raise CarbonConfigError(f"unknown carbon provider {name!r}") from None
    return cls(ctx)
