"""The kopf operator: watches policies, pods and GpuNodes, and writes plans."""
