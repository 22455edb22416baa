"""Cartrita's AI orchestrator (services/ai-orchestrator): only its database side lives in this example."""
