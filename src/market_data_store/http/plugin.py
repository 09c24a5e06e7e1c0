"""The service inside Litestar: ``ServicePlugin`` owns the lifespan (it enters
``service.components``) and hands each component to the controllers as one ``Provide``,
as Litestar's own ``ChannelsPlugin`` does (``on_app_init``). Nothing is kept on
``app.state``: code outside the controllers (the server, the probes, the admin guard,
tests) reaches the service through ``ServicePlugin.of(app)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin

from market_data_store.config import Settings
from market_data_store.service import Components, Lifecycle, components
from market_data_store.telemetry import Telemetry

from .dependencies import providers


class ServicePlugin(InitPlugin):
    """The service's settings, lifecycle and telemetry (from the start) and its running
    ``components`` (while the lifespan runs; the last ones stay readable after it)."""

    def __init__(self, settings: Settings, *, lifecycle: Lifecycle, telemetry: Telemetry) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.telemetry = telemetry
        self._components: Components | None = None

    @classmethod
    def of(cls, app: Litestar) -> ServicePlugin:
        """The plugin of ``app``; ``KeyError`` for an app without one."""
        return app.plugins.get(cls)

    @classmethod
    def find(cls, app: Litestar) -> ServicePlugin | None:
        """The plugin of ``app``, or None (a bare Litestar app: benchmarks)."""
        try:
            return cls.of(app)
        except KeyError:
            return None

    @property
    def components(self) -> Components:
        if self._components is None:
            raise RuntimeError("the service has not started: its components do not exist yet")
        return self._components

    @property
    def started(self) -> Components | None:
        """The components once built, else None (what the probe fast path asks)."""
        return self._components

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        # the app's own dependencies (a test's replacements) win over ours
        for name, provide in providers(
            lambda: self.components, self.settings, self.lifecycle, self.telemetry
        ).items():
            app_config.dependencies.setdefault(name, provide)
        app_config.lifespan.append(self._lifespan)
        return app_config

    @asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        try:
            async with components(
                self.settings, lifecycle=self.lifecycle, telemetry=self.telemetry
            ) as built:
                self._components = built
                yield
        finally:
            self.telemetry.shutdown()  # last: the coordinator's final counts are exported


__all__ = ["ServicePlugin"]
