"""Settings: the model (:mod:`.model`) and where values come from (:mod:`.sources`)."""

from tftproxy.errors import SettingsError
from tftproxy.settings.model import FeatureMode, RefreshMode, Settings
from tftproxy.settings.sources import LoadedSettings, load, load_settings, render

__all__ = [
    "FeatureMode",
    "LoadedSettings",
    "RefreshMode",
    "Settings",
    "SettingsError",
    "load",
    "load_settings",
    "render",
]
