"""TensorRT plugins of the project (importable without TensorRT or Triton).

`dcn_plugin`: the ``restore::DeformConv2dRestore`` plugin (registration metadata and
`register_plugin`); `dcn_triton`: its Triton kernel and launcher."""

from restore.export.plugins.dcn_plugin import PLUGIN_ID, SPEC, register_plugin

__all__ = ["PLUGIN_ID", "SPEC", "register_plugin"]
