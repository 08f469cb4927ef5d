"""`python -m emsg.server run ...`: the server alone, without the client CLI."""

from emsg.server.cli import server_app

if __name__ == "__main__":
    server_app()
