"""ONNX Runtime inference engine and its result value objects (no Qt)."""
