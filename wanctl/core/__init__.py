"""Core logic of wanctl. Nothing in here knows about Typer or the terminal."""
