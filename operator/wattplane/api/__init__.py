"""Wire types of the ``wattplane.io`` API, the single source of truth for the CRDs."""
