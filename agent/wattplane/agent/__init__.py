"""The node agent: applies GpuNode plans to the node's GPUs and reports what they do."""
