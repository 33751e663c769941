"""What every trainer shares: the loop (``loop``), the config reader (``config``), the JSON-lines and
manifest reader (``manifest``) and the run-folder flags (``run``). Each engine's own trainer lives in its
package (``methods/<engine>/``); nothing here imports an engine, so a new one needs no edit here."""
