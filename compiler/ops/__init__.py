"""The jetmamba op set: quantization primitives and (as they land) the custom ops, each with its
reference semantics in Python."""
