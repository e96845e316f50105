"""ONNX export: op translations (DeformConv or decomposed), parity checks, TensorRT."""
