"""Data: the stays format, sources (synthetic, PhysioNet 2012, ...), splits and Ray Data loading."""
