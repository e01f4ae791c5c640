"""Transport-neutral codecs: bytes in, arrays out (and back). No HTTP framework in here."""
