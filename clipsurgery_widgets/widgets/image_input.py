"""The current image of the widgets that show one: set from a path, array, PIL image, bytes or an upload."""
from __future__ import annotations

from typing import Any


class ImageInput:
    """``image`` (RGB uint8 [H, W, 3]) and the upload control's handler (mixed into ExplorerWidget).

    The widget provides ``explainer``, ``controls``, ``_refuse_input`` and implements ``_use_image``.
    """

    _rgb = None  # RGB uint8 [H, W, 3] once an image is set

    @property
    def image(self):
        """The current image as RGB uint8 [H, W, 3]; set it from a path, array, PIL image or bytes."""
        return self._rgb

    @image.setter
    def image(self, source: Any) -> None:
        error = self._set_image(source)
        if error is not None:
            raise error

    def _set_image(self, source: Any) -> Exception | None:
        """Load a new image and hand it to :meth:`_use_image`; a bad one is reported here and returned."""
        try:
            rgb = self.explainer.prepare_image(source)
        except Exception as exc:  # noqa: BLE001 - bad images are reported in the widget
            self._refuse_input(exc, "reading the image")
            return exc
        self._use_image(rgb)
        return None

    def _use_image(self, rgb) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its work; each widget says how."""
        raise NotImplementedError(f"{type(self).__name__} does not take a single image")

    def _on_upload(self, change: dict) -> None:
        """FileUpload observer: the uploaded file becomes the image."""
        files = change["new"]
        if not files:
            return
        self._set_image(bytes(files[0]["content"]))
        self.controls["upload"].value = ()  # so that uploading the same file again is a change
