"""Version v1alpha1 of the ``wattplane.io`` API: EnergyPolicy and GpuNode."""

from wattplane.api.v1alpha1 import energypolicy, gpunode

KINDS = (energypolicy, gpunode)
