"""``python -m server``: the API under gunicorn, configured as in production."""

from __future__ import annotations

import sys

from flask import Flask
from gunicorn.app.base import BaseApplication

from contract.settings import Settings, SettingsError
from server import create_app


class Server(BaseApplication):  # type: ignore[misc]
    """Gunicorn's documented custom-application hook, loading ``create_app()``."""

    def __init__(self, settings: Settings) -> None:
        from server.gunicorn_conf import options  # noqa: PLC0415 (after the settings were checked)

        self._options = options(settings)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app()


def main() -> int:
    """Run until gunicorn is told to stop."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"server: {exc}", file=sys.stderr)
        return 2
    Server(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
