"""Image search by image and by text: the Gradio app (a Hugging Face Space, or `python app.py`).

The app lives in search/web/ (layout, handlers, the APIs); this file starts it with the examples shipped
beside it.
"""
from pathlib import Path

from search.web.server import main

if __name__ == "__main__":
    main(examples=Path(__file__).resolve().parent / "examples")
