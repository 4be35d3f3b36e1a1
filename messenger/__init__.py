"""Holds Binance WebSocket streams and writes every symbol's latest value to Redis."""
