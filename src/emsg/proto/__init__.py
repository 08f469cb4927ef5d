"""The sans-I/O core shared by server and client: value types, errors, wire formats."""
