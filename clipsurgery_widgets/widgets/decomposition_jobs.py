"""The DecompositionExplorer's background work: its three named jobs, Stop and resume.

"image" decomposes the image shown, "pass" the whole image set (its terms and means), "texts" finds
one head's TEXTSPAN texts (running the pass first if it is missing). The constructor only asks for
them, so the widget appears at once with the status line saying what is being computed. The Stop
button is shown only while a job it stops ("pass" or "texts") runs.
"""
from __future__ import annotations

from typing import Any

#: the jobs the Stop button stops (the shown image's decomposition is quick and is not one of them)
STOPPABLE = ("pass", "texts")


class DecompositionJobs:
    """Mixin of :class:`~.decomposition.DecompositionExplorer` (before ``ExplorerWidget`` in its bases)."""

    session: Any
    #: the base shows the Stop button only while one of these runs (ExplorerWidget._show_stop)
    stoppable_jobs = STOPPABLE

    def stop(self) -> None:
        """Stop the pass over the image set; what is done stays saved and :meth:`resume` continues."""
        self.cancel("pass")
        self.cancel("texts")  # it may be running the pass too
        with self._lock:
            self._set_status("Stopped the pass over the image set: the images done are saved; resume() (or a head "
                             "click) continues from there.")

    def resume(self) -> None:
        """Run again whatever is missing (after :meth:`stop` or an error)."""
        if self._shown is None:
            self._request_image()
        self._request_pass()

    # --- requests ------------------------------------------------------------------------------

    def _request_image(self) -> None:
        index, labels, session = self.image_index, list(self.labels), self.session
        name = self.image_names[index]
        self.submit("image", lambda job: session.contributions(index, labels), self._apply_image,
                    busy_text=f"Decomposing image {index + 1} ({name}): every layer, head and position…",
                    doing="decomposing the image",
                    done_text=lambda r, s: f"Image {index + 1} ({name}) decomposed · {len(labels)} labels · "
                                           f"{s:.2f} s")

    def _request_pass(self) -> None:
        session = self.session
        self.submit("pass", lambda job: session.image_set_terms(stop=job.stopped, progress=job.progress),
                    lambda terms: (self._draw_ablation(), self._draw_texts()),
                    busy_text="Decomposing the image set…", doing="decomposing the image set",
                    done_text=lambda terms, s: f"{len(terms.keys)} images decomposed · {s:.2f} s")

    def _request_texts(self, head: tuple[int, int]) -> None:
        m, rank, session = self.m, self.rank, self.session
        self.submit("texts", lambda job: session.head_texts(*head, m=m, rank=rank, stop=job.stopped,
                                                            progress=job.progress),
                    lambda texts: self._draw_texts(),
                    busy_text=f"Finding the texts of layer {head[0]}, head {head[1]}…",
                    doing="finding the head's texts",
                    done_text=lambda texts, s: f"Texts of layer {head[0]}, head {head[1]} found · {s:.2f} s")
