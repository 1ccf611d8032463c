"""store: a collection is a directory (manifest.json, catalog.sqlite, vector files, index)."""
