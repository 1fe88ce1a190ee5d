"""One relay run: the sans-I/O core that decides (`core`), the asyncio shell that carries it
out (`runner`), the call's media legs and outputs (`media`, `audio`, `video`), and the events
they report (`events`)."""
