"""Test-wide settings: no weight downloads, a private cache dir, headless matplotlib."""
import os
import tempfile

# Set before huggingface_hub is imported anywhere: weight downloads must fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIPSURGERY_CACHE_DIR", tempfile.mkdtemp(prefix="clipsurgery-test-cache-"))
os.environ.setdefault("MPLBACKEND", "Agg")
