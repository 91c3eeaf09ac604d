"""The op table's entries, one module per family of ops; each module's ``OPS`` is a list of
entries (``compiler.ir.opdef.entry``) that ``compiler.ir.registry`` collects."""
