"""`difflab serve`: an AUTOMATIC1111-compatible HTTP API and a web page over one checkpoint (see app.create_app)."""
