"""What the messenger and the server must agree on: settings, symbols, keys, records."""
