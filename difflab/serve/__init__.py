"""`difflab serve`: an AUTOMATIC1111-compatible HTTP API and a web page over a catalog of checkpoints (see
app.create_app)."""
