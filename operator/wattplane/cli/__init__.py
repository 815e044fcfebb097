"""The ``wattplane`` command line: demo, status, carbon look-ups and standalone mode."""
