"""The runtime: frame pool, transport, envelope, stage base class, topology loader, plugin manager, supervisor."""
