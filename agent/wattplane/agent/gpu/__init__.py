"""GPU backends behind one protocol: NVML on real hardware, a simulator elsewhere."""
