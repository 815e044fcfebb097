"""Credentials for the carbon APIs, kept out of logs, reprs and error messages.

Two ways in:

* **Standalone** (CLI, ``wattplane run``, demos): :meth:`Credentials.from_env` reads

  ============================================  =============================================
  ``WATTPLANE_ELECTRICITYMAPS_TOKEN``           Electricity Maps ``auth-token``
  ``WATTPLANE_WATTTIME_USERNAME``               WattTime account name (for ``/login``)
  ``WATTPLANE_WATTTIME_PASSWORD``               WattTime password
  ``WATTPLANE_CARBON_AWARE_SDK_TOKEN``          optional bearer token for a Carbon Aware SDK
                                                WebAPI behind an authenticating proxy
  ============================================  =============================================

* **Operator**: it reads Kubernetes Secrets itself and passes :class:`Credentials` objects to
  the service (by ``SourceConfig.credentials_ref``); this package never talks to Kubernetes.

Secret values are :class:`pydantic.SecretStr`, whose ``str``/``repr`` print ``**********``.
Only the code that builds a request header calls ``get_secret_value()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, SecretStr

ENV_ELECTRICITYMAPS_TOKEN = "WATTPLANE_ELECTRICITYMAPS_TOKEN"
ENV_WATTTIME_USERNAME = "WATTPLANE_WATTTIME_USERNAME"
ENV_WATTTIME_PASSWORD = "WATTPLANE_WATTTIME_PASSWORD"
ENV_CARBON_AWARE_SDK_TOKEN = "WATTPLANE_CARBON_AWARE_SDK_TOKEN"


class Credentials(BaseModel):
    """Secrets for every provider; each field is optional because each source needs only its own.

    The WattTime username is not secret by itself, but it is still kept as ``SecretStr``: account
    names have no business in logs either.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    electricitymaps_token: SecretStr | None = None
    watttime_username: SecretStr | None = None
    watttime_password: SecretStr | None = None
    carbon_aware_sdk_token: SecretStr | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        """Read the ``WATTPLANE_*`` variables listed in the module docstring (empty = unset)."""
        env = os.environ if environ is None else environ

        def secret(name: str) -> SecretStr | None:
            value = env.get(name, "")
            return SecretStr(value) if value else None

        return cls(
            electricitymaps_token=secret(ENV_ELECTRICITYMAPS_TOKEN),
            watttime_username=secret(ENV_WATTTIME_USERNAME),
            watttime_password=secret(ENV_WATTTIME_PASSWORD),
            carbon_aware_sdk_token=secret(ENV_CARBON_AWARE_SDK_TOKEN),
        )
