"""A local Binance spot stand-in for tests, benchmarks and the offline demo."""
