"""TensorRT plugins of the project (importable without TensorRT; see `dcn_plugin`)."""

from restore.export.plugins.dcn_plugin import PLUGIN_ID, SPEC, register_plugin

__all__ = ["PLUGIN_ID", "SPEC", "register_plugin"]
