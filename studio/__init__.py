"""The application shell: the Studio object, the `studio` CLI, the Gradio app and its launch."""

from studio.core import Studio

__all__ = ["Studio"]
