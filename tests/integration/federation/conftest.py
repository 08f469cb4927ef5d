"""Federation tests need the federation wired into the server (settings, app)."""

from emsg.server.settings import Settings

if "federation" not in Settings.model_fields:
    collect_ignore_glob = ["test_*.py"]
