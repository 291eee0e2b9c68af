"""The backends a bundle runs on, one folder each: ``<name>/loader.py`` opens what the backend
runs (an ONNX Runtime session, the PyTorch model, a TensorRT engine from its cache) and
``<name>/runner.py`` is its :class:`cvexport.runtime.base.Runner`. ``cvexport.runtime.create_runner``
picks one by name and imports it lazily, so a machine without CUDA or TensorRT imports none of
their code."""
