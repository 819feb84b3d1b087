"""The engine: data, models, methods, training runs, generation. Importable without Gradio."""
