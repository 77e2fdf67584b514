"""The gateway's routers, one module per area of the public API."""
