"""The `emsg` command line: a scriptable, human-friendly front end on `emsg.client`."""
