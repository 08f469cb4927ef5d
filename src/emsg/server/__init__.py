"""The EMSG homeserver: app factory, services, storage and the HTTP/WebSocket edge."""
