"""Small shared helpers around kubernetes_asyncio, used by both the operator and the agent."""
