"""``vidsearch serve``: the HTTP API, its web page and the dynamic batch scheduler (an entry point,
above the engine; needs the ``[serve]`` extra)."""
