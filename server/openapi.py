"""The OpenAPI 3 description of every route, parameter, response and error of the server."""

from __future__ import annotations

from typing import Any

from contract import kinds

Doc = dict[str, Any]

STRING, INTEGER = {"type": "string"}, {"type": "integer"}
PRICE = {
    "type": "string",
    "description": "Exactly as Binance sent it (never through a float)",
    "example": "25.35190000",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
}


def _obj(required: list[str], props: Doc, extra: bool = False) -> Doc:
    return {"type": "object", "required": required, "properties": props, "additionalProperties": extra}


def _ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Doc, description: str, headers: Doc | None = None) -> Doc:
    out: Doc = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


FRESHNESS = {
    "ts": {**INTEGER, "description": "When the value last changed (epoch ms)"},
    "as_of": {
        **INTEGER,
        "description": "Up to when it is known to be current: its connection was last heard from",
    },
    "age_ms": {**INTEGER, "minimum": 0, "description": "now - as_of"},
    "source": {
        "type": "string",
        "enum": ["stream", "rest"],
        "description": "stream, or a REST seed after a connect",
    },
    "connection": {
        **INTEGER,
        "description": "Which of the messenger's connections to Binance vouches for it",
    },
}
REQUIRED_FRESHNESS = ["ts", "as_of", "age_ms", "source"]
SCHEMAS: Doc = {
    "ApiError": _obj(["status_code", "error"], {"status_code": INTEGER, "error": STRING}),
    "BinanceError": _obj(["code", "msg"], {"code": INTEGER, "msg": STRING}),
    "BookTicker": _obj(
        [
            "symbol",
            "bid_price",
            "bid_quantity",
            "ask_price",
            "ask_quantity",
            "update_id",
            *REQUIRED_FRESHNESS,
        ],
        {
            "symbol": {**STRING, "example": "BTCUSDT", "description": "Binance's spelling"},
            "bid_price": PRICE,
            "bid_quantity": PRICE,
            "ask_price": PRICE,
            "ask_quantity": PRICE,
            "update_id": {
                "type": ["integer", "null"],
                "description": "Binance's order book update id u (null right after a REST seed)",
            },
            **FRESHNESS,
        },
        extra=True,
    ),
    "Record": _obj(["symbol", *REQUIRED_FRESHNESS], {"symbol": STRING, **FRESHNESS}, extra=True),
    "Book": _obj(
        ["symbol", "update_id", "bids", "asks", "partial", *REQUIRED_FRESHNESS],
        {
            "symbol": {**STRING, "example": "BTCUSDT", "description": "Binance's spelling"},
            "update_id": {**INTEGER, "description": "Binance's lastUpdateId: the book is exactly this one"},
            "bids": {
                "type": "array",
                "items": {"type": "array", "items": PRICE, "minItems": 2, "maxItems": 2},
                "description": "[price, quantity], best (highest) first; at most limit",
            },
            "asks": {
                "type": "array",
                "items": {"type": "array", "items": PRICE, "minItems": 2, "maxItems": 2},
                "description": "[price, quantity], best (lowest) first; at most limit",
            },
            "partial": {
                "type": "array",
                "items": {"type": "string", "enum": ["bids", "asks"]},
                "description": "Sides answered with fewer than limit levels although the book has more: "
                "beyond what is known exactly (deeper than the snapshot the book was synchronized from)",
            },
            **FRESHNESS,
        },
    ),
    "Snapshots": _obj(
        ["kind", "snapshots"], {"kind": STRING, "snapshots": {"type": "array", "items": _ref("Record")}}
    ),
    "Health": _obj(["status"], {"status": STRING}),
    "Ready": _obj(
        ["status"],
        {
            "status": {**STRING, "description": "ready or unavailable"},
            "reason": {**STRING, "description": "Why not: Redis, no heartbeat, Binance unreachable, ..."},
            "messenger": {
                "type": "object",
                "description": "The first member's last heartbeat: binance (connected, connecting or "
                "unreachable), binance_errors, live_connections, streams, fresh, redis, ...",
            },
            "members": {
                "type": "array",
                "items": {"type": "object"},
                "description": "Every live messenger's (member's) last heartbeat, each naming its member, "
                "whether it is leaving and the members it spreads streams over (view)",
            },
            "heartbeat_age_ms": INTEGER,
            "fresh_share": {"type": ["number", "null"], "description": "Share of streamed keys servable now"},
        },
    ),
    "BinanceBookTicker": _obj(
        ["symbol", "bidPrice", "bidQty", "askPrice", "askQty"],
        {"symbol": STRING, "bidPrice": PRICE, "bidQty": PRICE, "askPrice": PRICE, "askQty": PRICE},
    ),
    "BinancePrice": _obj(["symbol", "price"], {"symbol": STRING, "price": PRICE}),
    "Binance24hr": {
        "type": "object",
        "required": ["symbol", "lastPrice", "openPrice"],
        "additionalProperties": True,
    },
    "BinanceRollingTicker": {
        "type": "object",
        "required": ["symbol", "openPrice", "lastPrice", "openTime", "closeTime", "count"],
        "additionalProperties": True,
    },
    "BinanceSystemStatus": _obj(
        ["status", "msg"],
        {
            "status": {"type": "integer", "enum": [0, 1]},
            "msg": {"type": "string", "enum": ["normal", "system maintenance"]},
        },
    ),
    "BinanceAvgPrice": _obj(
        ["mins", "price", "closeTime"], {"mins": INTEGER, "price": PRICE, "closeTime": INTEGER}
    ),
    "BinanceDepth": _obj(
        ["lastUpdateId", "bids", "asks"],
        {
            "lastUpdateId": INTEGER,
            "bids": {"type": "array", "items": {"type": "array", "items": STRING}},
            "asks": {"type": "array", "items": {"type": "array", "items": STRING}},
        },
    ),
    "BinanceTrade": _obj(
        ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"],
        {
            "id": INTEGER,
            "price": PRICE,
            "qty": PRICE,
            "quoteQty": PRICE,
            "time": INTEGER,
            "isBuyerMaker": {"type": "boolean"},
            "isBestMatch": {"type": "boolean"},
        },
    ),
    "BinanceAggTrade": _obj(
        ["a", "p", "q", "f", "l", "T", "m", "M"],
        {
            "a": INTEGER,
            "p": PRICE,
            "q": PRICE,
            "f": INTEGER,
            "l": INTEGER,
            "T": INTEGER,
            "m": {"type": "boolean"},
            "M": {"type": "boolean"},
        },
    ),
    "BinanceExchangeInfo": {
        "type": "object",
        "required": ["timezone", "serverTime", "symbols"],
        "additionalProperties": True,
    },
}

# A letter or digit: ASCII ones, or any non-ASCII character (Binance lists some symbols in UTF-8:
# contract.symbols takes non-ASCII letters). Written as "not an ASCII non-alphanumeric" so that both
# Python's and ECMA-262's regular expressions read it alike.
SYMBOL_CHAR = r"[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"
SYMBOL_PATTERN = rf"^{SYMBOL_CHAR}{{1,20}}(_{SYMBOL_CHAR}{{1,20}})?$"
SYMBOL = {
    "name": "symbol",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": SYMBOL_PATTERN, "maxLength": 21},
    "description": "BTC_USDT, BTCUSDT, btc_usdt or btcusdt (non-ASCII letters as listed, in UTF-8)",
    "example": "BTC_USDT",
}
KIND = {
    "name": "kind",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 32},
    "description": f"One of {', '.join(kinds.KINDS)} (any case; a kline's interval exactly)",
    "example": "kline_1m",
}
MAX_AGE = {
    "name": "max_age_ms",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Answer the stale error unless the value was confirmed current this recently",
}
BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"max_age_ms": {"type": "integer", "minimum": 0}}}
        }
    },
}

BOOK_LIMIT = {"type": "integer", "minimum": 1, "maximum": 5000}
BOOK_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"max_age_ms": {"type": "integer", "minimum": 0}, "limit": BOOK_LIMIT},
            }
        }
    },
}
LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": BOOK_LIMIT,
    "description": "Levels a side, 1 to 5000 (default 100); kind depth only",
}
# Order books: which sides stop short of the limit asked for, beyond what is known exactly.
PARTIAL = {
    "X-Transmute-Depth-Partial": {
        "description": "Present when a side has fewer levels than asked for although the book has more: "
        "the levels held are exact, and there are none beyond them that are (deeper than the snapshot the "
        "book was synchronized from). Absent: each side is whole to the limit, or is the whole book",
        "schema": {"type": "string", "enum": ["bids", "asks", "bids,asks"]},
    }
}
E400 = _json(
    _ref("ApiError"), "Another method than POST, a malformed symbol, a bad max_age_ms, limit or body"
)
E404 = _json(_ref("ApiError"), "An unknown symbol (with the closest listed one) or kind")
E409 = _json(_ref("ApiError"), "A listed symbol that does not trade now")
E408 = _json(_ref("ApiError"), "A body not all there BODY_TIMEOUT_MS after the headers (connection closed)")
E413 = _json(_ref("ApiError"), "A body over 16 KiB")
E500 = _json(
    _ref("ApiError"),
    "Stale: the symbol is streamed but its value is not current, or not as recent as max_age_ms",
)
E503 = _json(
    _ref("ApiError"),
    "Redis down, no symbol list yet, or a first value that did not come in time",
    RETRY_AFTER,
)
E429 = _json(
    _ref("ApiError"),
    "It would start streams beyond the limits of streaming on demand; none started",
    RETRY_AFTER,
)
OUR_ERRORS = {
    "400": E400, "404": E404, "408": E408, "409": E409, "413": E413, "429": E429, "500": E500, "503": E503,
}  # fmt: skip


NOT_SUPPORTED = "Not supported (400)"


def _not_post(params: list[Doc]) -> Doc:
    """Every other method: the contract's 400 (``{"error": "GET not supported."}``)."""
    op = {"summary": NOT_SUPPORTED, "parameters": params, "responses": {"400": E400}}
    return {method: op for method in ("get", "put", "patch", "delete", "options", "head", "trace")}


def _snapshot(
    path_params: list[Doc],
    schema: Doc,
    summary: str,
    query: list[Doc] | None = None,
    headers: Doc | None = None,
) -> Doc:
    post = {
        "summary": summary,
        "parameters": [*path_params, MAX_AGE, *(query or [])],
        "requestBody": BOOK_BODY if query else BODY,
        "responses": {"200": _json(schema, "The current value", headers), **OUR_ERRORS},
    }
    return {"post": post, **_not_post(path_params)}


# Every Binance-shaped answer says what it cost of the client's Binance weight: nothing.
USED_WEIGHT = {
    "X-MBX-USED-WEIGHT-1M": {
        "description": "Binance's used request weight of the minute: always 0 (answered from Redis)",
        "schema": {"type": "string", "enum": ["0"]},
    }
}


# Binance's 12 fields: open time, open, high, low, close, volume, close time, quote volume, trades,
# taker buy base volume, taker buy quote volume, ignore.
KLINE_ROW: Doc = {"type": "array", "minItems": 12, "maxItems": 12, "items": {"type": ["integer", "string"]}}


def _binance(summary: str, schema: Doc, params: list[Doc], many: bool = False) -> Doc:
    body = {"oneOf": [schema, {"type": "array", "items": schema}]} if many else schema
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": _json(body, "Binance's shape", USED_WEIGHT),
                "400": _json(
                    _ref("BinanceError"),
                    "Invalid symbol (-1121) or parameter (-1023, -1100, -1101, -1102, -1128, -1130, -1139)",
                    USED_WEIGHT,
                ),
                "429": _json(
                    _ref("BinanceError"),
                    "It would start streams beyond the limits of streaming on demand (-1003)",
                    {**RETRY_AFTER, **USED_WEIGHT},
                ),
                "503": _json(
                    _ref("BinanceError"),
                    "No value can be vouched for now (-1001); never an old one, never a partial list",
                    {**RETRY_AFTER, **USED_WEIGHT},
                ),
            },
        }
    }


def _query(name: str, description: str, schema: Doc | None = None, required: bool = False) -> Doc:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema or STRING,
        "description": description,
    }


ONE = _query("symbol", "One symbol, e.g. BTCUSDT")
MANY = _query("symbols", 'A JSON list, e.g. ["BTCUSDT","BNBBTC"]', {"type": "string", "pattern": r"^\[.+\]$"})
REQUIRED = _query("symbol", "The symbol, e.g. BTCUSDT", required=True)
TEXT = {"description": "Text", "content": {"text/plain": {"schema": STRING}}}
HTML = {"description": "A page", "content": {"text/html": {"schema": STRING}}}
EVENTS = {
    "description": "Server-Sent Events: `snapshot` (the record), `stale`, and a heartbeat comment every 3 s",
    "content": {"text/event-stream": {"schema": STRING}},
}
STREAM_ERRORS = {"404": E404, "409": E409, "429": E429, "503": E503}

PATHS: Doc = {
    "/snapshot/{symbol}": _snapshot([SYMBOL], _ref("BookTicker"), "The best bid and ask of a symbol"),
    "/snapshot/{symbol}/{kind}": _snapshot(
        [SYMBOL, KIND],
        _ref("Record"),
        "The latest value of any stream kind (depth: the order book's top limit levels, a Book; 503 while "
        "a deeper one is written)",
        [LIMIT],
        PARTIAL,
    ),
    "/snapshots": {
        "post": {
            "summary": "Several symbols of one kind, read at one instant",
            "parameters": [
                _query("symbols", "Comma-separated (or a JSON list in the body)"),
                _query("kind", "A stream kind; default bookTicker"),
                MAX_AGE,
                LIMIT,
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["symbols"],
                            "properties": {
                                "symbols": {
                                    "type": "array",
                                    "items": {"type": "string", "maxLength": 64},
                                    "minItems": 1,
                                    "maxItems": 100,
                                },
                                "kind": {"type": "string", "minLength": 1, "maxLength": 32},
                                "max_age_ms": {"type": "integer", "minimum": 0},
                                "limit": BOOK_LIMIT,
                            },
                        }
                    }
                },
            },
            "responses": {"200": _json(_ref("Snapshots"), "Every value, in the order asked"), **OUR_ERRORS},
        },
        **_not_post([]),
    },
    "/stream/{symbol}": {
        "get": {
            "summary": "Follow a symbol's best bid and ask (live push)",
            "parameters": [SYMBOL],
            "responses": {"200": EVENTS, "400": E400, **STREAM_ERRORS},
        }
    },
    "/stream/{symbol}/{kind}": {
        "get": {
            "summary": "Follow any stream kind (live push; depth: its top limit levels, an event when they "
            "change)",
            "parameters": [SYMBOL, KIND, LIMIT],
            "responses": {"200": EVENTS, "400": E400, **STREAM_ERRORS},
        }
    },
    "/api/v3/ping": _binance("Test connectivity", {"type": "object", "additionalProperties": False}, []),
    "/api/v3/time": _binance("Server time", _obj(["serverTime"], {"serverTime": INTEGER}), []),
    "/api/v3/exchangeInfo": _binance(
        "Symbols and rules, as Binance last sent them", _ref("BinanceExchangeInfo"), [ONE, MANY]
    ),
    "/api/v3/ticker/bookTicker": _binance(
        "Best bid and ask (neither symbol nor symbols: every trading symbol, whole or 503)",
        _ref("BinanceBookTicker"),
        [ONE, MANY],
        many=True,
    ),
    "/api/v3/ticker/price": _binance(
        "Last price (neither symbol nor symbols: every trading symbol, whole or 503)",
        _ref("BinancePrice"),
        [ONE, MANY],
        many=True,
    ),
    "/api/v3/ticker/24hr": _binance(
        "Rolling 24 h statistics (neither symbol nor symbols: every trading symbol, whole or 503)",
        _ref("Binance24hr"),
        [ONE, MANY, _query("type", "FULL (default) or MINI")],
        many=True,
    ),
    "/api/v3/ticker": _binance(
        "Rolling-window statistics over 1h, 4h or 1d (other windows Binance accepts: 400 -1130)",
        _ref("BinanceRollingTicker"),
        [
            ONE,
            MANY,
            _query("windowSize", "1h, 4h or 1d (default 1d)"),
            _query("type", "FULL (default) or MINI"),
        ],
        many=True,
    ),
    "/sapi/v1/system/status": {
        "get": {
            "summary": "0 normal while connected to Binance, else 1 system maintenance (always HTTP 200)",
            "parameters": [],
            "responses": {"200": _json(_ref("BinanceSystemStatus"), "Binance's shape", USED_WEIGHT)},
        }
    },
    "/api/v3/avgPrice": _binance("Average price", _ref("BinanceAvgPrice"), [REQUIRED]),
    "/api/v3/depth": _binance(
        "The order book (the full local book; 503 while a deeper one is written, never a short answer)",
        _ref("BinanceDepth"),
        [
            REQUIRED,
            _query("limit", "Levels a side: 1 or more, default 100 (more than 5000 is 5000)", INTEGER),
        ],
    ),
    "/api/v3/trades": _binance(
        "Recent trades, oldest first",
        {"type": "array", "items": _ref("BinanceTrade")},
        [REQUIRED, _query("limit", "1 to 1000 (default 500)", INTEGER)],
    ),
    **{
        path: _binance(
            "Candles, oldest first: kept closed ones, the stream's open one (503 while a range is fetched)",
            {"type": "array", "items": KLINE_ROW},
            [
                REQUIRED,
                _query(
                    "interval",
                    "1s, 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w, 1M",
                    required=True,
                ),
                _query("startTime", "Open time from (epoch ms)", INTEGER),
                _query("endTime", "Open time up to (epoch ms)", INTEGER),
                _query("limit", "1 to 1000 (default 500)", INTEGER),
                _query(
                    "timeZone", "UTC offset, where it leaves the interval's windows alone (else 400 -1100)"
                ),
            ],
        )
        for path in ("/api/v3/klines", "/api/v3/uiKlines")
    },
    "/api/v3/historicalTrades": _binance(
        "Trades from an id on (default: the most recent), oldest first; older ones fetched once",
        {"type": "array", "items": _ref("BinanceTrade")},
        [
            REQUIRED,
            _query("fromId", "The first trade id", INTEGER),
            _query("limit", "1 to 1000 (default 500)", INTEGER),
        ],
    ),
    "/api/v3/aggTrades": _binance(
        "Aggregate trades: the most recent, from an id, or by time (fromId with a time: -1128)",
        {"type": "array", "items": _ref("BinanceAggTrade")},
        [
            REQUIRED,
            _query("fromId", "The first aggregate trade id", INTEGER),
            _query("startTime", "From this time on (ms, inclusive): the first limit", INTEGER),
            _query("endTime", "Up to this time (ms, inclusive); alone: the last limit", INTEGER),
            _query("limit", "1 to 1000 (default 500)", INTEGER),
        ],
    ),
    "/healthz": {"get": {"summary": "The process is up", "responses": {"200": _json(_ref("Health"), "Up")}}},
    "/readyz": {
        "get": {
            "summary": "Redis answers, and every messenger (member) is heard from, connected to Binance "
            "and spreads the streams over the same members",
            "responses": {
                "200": _json(_ref("Ready"), "Ready, with the share of streamed keys that are fresh"),
                "503": _json(_ref("Ready"), "Not ready, with the reason"),
            },
        }
    },
    "/metrics": {"get": {"summary": "Prometheus metrics of every worker", "responses": {"200": TEXT}}},
    "/openapi.json": {
        "get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3")}}
    },
    "/docs": {"get": {"summary": "This document, as a page", "responses": {"200": HTML}}},
    "/": {"get": {"summary": "The status page (streamed symbols, live)", "responses": {"200": HTML}}},
    "/status.json": {
        "get": {
            "summary": "What the status page shows",
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["messenger", "symbols", "books"]},
                    "Every member's heartbeat (members; messenger: the first one's), the streamed symbols; "
                    "the order books kept, each with its update id, levels held "
                    "(counts) and age, or the reason it cannot be served: syncing, resyncing, out_of_sync "
                    "or not_vouched",
                ),
                "503": _json(_ref("ApiError"), "Redis does not answer", RETRY_AFTER),
            },
        }
    },
}
PATHS["/api/v3/depth"]["get"]["responses"]["200"]["headers"].update(PARTIAL)
# About 1.9 MB: answered with an ETag, and gzipped for clients that accept it (server/exchange_info.py).
PATHS["/api/v3/exchangeInfo"]["get"]["responses"]["304"] = {
    "description": "Not modified: If-None-Match names the current version's ETag"
}

# Tags group the operations on /docs, in this order.
OURS, BINANCE, OPERATING = "Snapshots and live push", "Binance-compatible API", "Operating it"
TAGS = [
    {"name": OURS, "description": "Transmute's own API: the current value of any stream, and each update."},
    {"name": BINANCE, "description": "The same data in Binance's REST shapes and error codes."},
    {"name": OPERATING, "description": "Health, readiness, metrics, the status page and this description."},
]


def _tag(path: str) -> str:
    if path.startswith(("/api/", "/sapi/")):
        return BINANCE
    return OURS if path.startswith(("/snapshot", "/stream")) else OPERATING


def document() -> Doc:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Transmute",
            "version": "1",
            "description": "Live Binance market data over plain HTTP. Every value is vouched for by a live "
            "connection to Binance; what cannot be is never served.",
        },
        "tags": TAGS,
        "paths": {
            path: {method: {**op, "tags": [_tag(path)]} for method, op in operations.items()}
            for path, operations in PATHS.items()
        },
        "components": {"schemas": SCHEMAS},
    }
