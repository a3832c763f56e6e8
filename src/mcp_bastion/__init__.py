"""mcp-bastion: a secure, fast HTTP gateway for stdio MCP servers."""

__version__ = "0.1.0"
__all__ = ["__version__"]
