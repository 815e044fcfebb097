"""Pure planning: fleet snapshot + policies → per-GPU targets. No I/O, no clocks, no clients."""
