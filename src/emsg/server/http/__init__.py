"""The HTTP and WebSocket edge: routers, middleware, error mapping."""
