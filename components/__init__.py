"""One file per tab, UI only. Each exposes build(studio, ...) and holds no global state."""
