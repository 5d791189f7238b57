"""Qt-free, evented viewer state (napari's ViewerModel pattern): widgets render it and send intents."""
