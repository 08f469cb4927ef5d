"""Federation: discovery, signed server-to-server requests, the durable outbound
queue per destination, and the inbound side that verifies and applies transactions."""
